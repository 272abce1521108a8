"""The package's layout: dependencies flow one way, old import paths still work (with a warning), plots leave a
user's matplotlib backend alone, and the CLI turns only the library's input errors into one-line messages."""

import ast
import graphlib
import importlib
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "rewardcollapse"
DEPRECATED_ALIASES = {"rewardcollapse.experiment", "rewardcollapse.data.longform", "rewardcollapse.prompt_openness"}
# Lower layers never import higher ones: core <- loss, data, diagnostics, plots <- training, settings <- experiments,
# estimators <- cli.
LAYERS = {
    "core": 0,
    "_files": 0,
    "loss": 1,
    "data": 1,
    "diagnostics": 1,
    "plots": 1,
    "training": 2,
    "settings": 2,
    "experiments": 3,
    "estimators": 3,
    "cli": 4,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every rewardcollapse module a file imports, at the top or inside functions.

    A module-level ``__getattr__`` only serves deprecated aliases (a name that moved), so its imports are left out.
    """
    tree = ast.parse(path.read_text())
    aliases = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__"]
    skipped = {id(node) for alias in aliases for node in ast.walk(alias)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rewardcollapse"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rewardcollapse"))
    return found


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}
    return {m: deps for m, deps in modules.items() if m not in DEPRECATED_ALIASES}


def test_no_import_cycle_inside_core_and_none_between_modules():
    edges = graph()
    core = {m: {d for d in deps if d.startswith("rewardcollapse.core.")} for m, deps in edges.items()}
    core = {m: deps - {m} for m, deps in core.items() if m.startswith("rewardcollapse.core.")}
    graphlib.TopologicalSorter(core).prepare()  # raises CycleError naming the cycle
    # Beyond core: a package's __init__ gathers its modules, so compare modules, not packages.
    modules = {m: {d for d in deps if d in edges and not d.endswith(m)} - {m} for m, deps in edges.items()}
    inits = {m for m in edges if (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
    plain = {m: deps - inits for m, deps in modules.items() if m not in inits}
    graphlib.TopologicalSorter(plain).prepare()


def test_dependencies_flow_one_way():
    edges = graph()
    assert "rewardcollapse.loss" in edges["rewardcollapse.training.trainer"]  # the scanner sees imports
    assert "rewardcollapse.core.solver" in edges["rewardcollapse.core.limits"]  # function-level ones too
    wrong = []
    for module, deps in graph().items():
        here = layer(module)
        for dep in deps:
            there = layer(dep)
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("rewardcollapse.experiment", "rewardcollapse.experiments", "run_experiment"),
        ("rewardcollapse.data.longform", "rewardcollapse.experiments.longform", "build_longform"),
        ("rewardcollapse.prompt_openness", "rewardcollapse.estimators", "fit_openness_classifier"),
    ],
)
def test_old_import_paths_work_for_one_release_with_a_warning(old, new, name):
    sys.modules.pop(old, None)
    with pytest.warns(FutureWarning, match=f"{old} moved to"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_plot_group_rewards_moved_to_plots_with_an_alias():
    import rewardcollapse.diagnostics as diagnostics
    from rewardcollapse.plots import plot_group_rewards

    with pytest.warns(FutureWarning, match="moved to rewardcollapse.plots.plot_group_rewards"):
        assert diagnostics.plot_group_rewards is plot_group_rewards
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        diagnostics.nothing  # noqa: B018


def test_plotting_never_switches_a_chosen_backend(monkeypatch):
    import matplotlib

    from rewardcollapse import plots

    calls = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, **kwargs: calls.append(backend))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    plots._pyplot()  # pyplot is imported already in this session: its backend is in use
    assert calls == []
    monkeypatch.delitem(sys.modules, "matplotlib.pyplot")  # as in a fresh process
    assert not plots._needs_file_backend()  # a screen: matplotlib picks its own backend
    monkeypatch.setenv("MPLBACKEND", "TkAgg")
    monkeypatch.delenv("DISPLAY")
    assert not plots._needs_file_backend()  # the user's choice
    monkeypatch.delenv("MPLBACKEND")
    assert plots._needs_file_backend()  # headless and nothing chosen: Agg
    monkeypatch.setattr(sys, "platform", "darwin")
    assert not plots._needs_file_backend()


def test_cli_reports_input_errors_in_one_line_and_keeps_bugs_visible(monkeypatch, capsys):
    from rewardcollapse import cli
    from rewardcollapse.core.errors import InputError

    assert cli.main(["solve", "--ranking", "[[0]]"]) == 2
    assert capsys.readouterr().err.startswith("error: `ranking` needs at least 2 tiers")

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")  # a bug, not bad input

    monkeypatch.setattr(cli, "_solve", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        cli.main(["solve", "-n", "3"])
    assert issubclass(InputError, Exception) and not issubclass(TypeError, InputError)
