"""The package's layout: its import graph has no cycle and no edge from a lower layer to a higher one, plots leave a
user's matplotlib backend alone, and the CLI turns only the library's input errors into one-line messages."""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "rewardcollapse"

# Each part of the package and its layer: a module imports only from its own layer or lower ones, never higher
# (and the graph has no cycle, so two parts of one layer never import each other both ways).
#   core <- _files, loss, data <- diagnostics <- plots <- training <- experiments, estimators <- cli
# `_files` (atomic writes, output checks) needs only core.errors and serves training, experiments, estimators and
# the CLI, so it sits beside loss and data. `plots` draws what `diagnostics` computes, so it sits above it.
# `settings` (the commands' torch-free option dataclasses) reads data's input formats and serves training and the CLI.
# `estimators` loads its sentence encoder through training.models, so it sits above training, beside experiments.
# `trl` (TRL's names with TRL's defaults) only renames training's config and trainer, so it sits there too.
# The package's own __init__ (the public API) gathers core and plots, so it sits with plots.
LAYERS = [
    ("core",),
    ("_files", "loss", "data"),
    ("diagnostics",),
    ("plots", "settings"),
    ("training",),
    ("experiments", "estimators", "trl"),
    ("cli",),
]
LAYER = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.ImportFrom | ast.Import, module: str, is_package: bool) -> list[tuple[str, str | None]]:
    """``(module, name)`` of each import in ``node`` (``name`` None for ``import x.y``), relative ones made absolute."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    return [(base, alias.name) for alias in node.names]


def _statements(path: Path, module: str) -> list[tuple[str, str | None]]:
    """Every import of a file, at the top or inside functions and classes (a function-level import is an edge too)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += _imported(node, module, is_package)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports.

    ``from pkg import name`` points at the module ``pkg.name`` when there is one, else at the submodule whose
    ``name`` ``pkg/__init__.py`` re-exports (followed through chains of re-exports), else at ``pkg`` itself. So an
    __init__ that gathers its submodules' names adds no edge of its own between them. Importing a submodule runs its
    parents' __init__ first; those implicit edges are left out, as every module has them.
    """
    files = {module_name(p, package): p for p in package.rglob("*.py")}
    statements = {m: _statements(p, m) for m, p in files.items()}
    inits = {m for m, p in files.items() if p.name == "__init__.py"}
    exports = {m: {name: source for source, name in statements[m] if name is not None} for m in inits}

    def target(source: str, name: str | None) -> str | None:
        seen = set()
        while name is not None and f"{source}.{name}" not in files and name in exports.get(source, {}):
            if source in seen:
                break
            seen.add(source)
            source = exports[source][name]
        if name is not None and f"{source}.{name}" in files:
            return f"{source}.{name}"
        return source if source in files else None

    graph = {}
    for module, found in statements.items():
        targets = {target(source, name) for source, name in found}
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return list(reversed(error.args[1]))
    return None


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else LAYER["plots"]


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer by a lower one."""
    wrong = []
    for module, deps in sorted(graph.items()):
        for dep in sorted(deps):
            here, there = layer(module), layer(dep)
            if here is not None and there is not None and there > here:
                wrong.append(f"{module} (layer {here}) imports {dep} (layer {there})")
    return wrong


def test_the_scanner_sees_function_level_imports_and_follows_reexports():
    edges = import_graph()
    assert "rewardcollapse.loss" in edges["rewardcollapse.training.trainer"]
    assert "rewardcollapse.core.solver" in edges["rewardcollapse.core.limits"]  # a function-level import
    # plots imports `from rewardcollapse.core import optimal_rewards, utility`: the modules that define them
    assert {"rewardcollapse.core.solver", "rewardcollapse.core.utilities"} <= edges["rewardcollapse.plots"]
    assert "rewardcollapse.core" not in edges["rewardcollapse.plots"]
    assert "rewardcollapse.core.utilities" in edges["rewardcollapse.core"]  # an __init__ imports its modules


def test_the_checkers_report_a_cycle_and_a_back_edge():
    cycle = find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    wrong = back_edges(
        {"rewardcollapse.core.x": {"rewardcollapse.loss"}, "rewardcollapse.loss": {"rewardcollapse.core.x"}}
    )
    assert wrong == ["rewardcollapse.core.x (layer 0) imports rewardcollapse.loss (layer 1)"]
    assert back_edges({"rewardcollapse.plots": {"rewardcollapse.diagnostics"}}) == []
    assert back_edges({"rewardcollapse.diagnostics": {"rewardcollapse.plots"}}) != []
    assert back_edges({"rewardcollapse.core.ranking": {"rewardcollapse"}}) != []  # the public API is not core's
    assert back_edges({"rewardcollapse.cli": {"rewardcollapse"}}) == []


def test_a_cycle_through_a_function_level_import_and_a_reexport_is_found(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("from pkg.sub.inner import helper\n")
    (package / "sub" / "inner.py").write_text("from pkg.outer import value\n\ndef helper():\n    return value\n")
    (package / "outer.py").write_text(
        "value = 1\n\ndef use():\n    from pkg.sub import helper\n\n    return helper()\n"
    )
    graph = import_graph(package)
    assert graph["pkg.outer"] == {"pkg.sub.inner"}  # through the re-export, from inside a function
    assert set(find_cycle(graph)) == {"pkg.outer", "pkg.sub.inner"}


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_every_part_of_the_package_has_a_layer():
    parts = {module.split(".")[1] for module in import_graph() if "." in module}
    assert parts == set(LAYER)


def test_dependencies_flow_one_way():
    assert back_edges(import_graph()) == []


def test_plotting_never_switches_a_chosen_backend(monkeypatch):
    import matplotlib

    from rewardcollapse import plots

    calls = []
    monkeypatch.setattr(matplotlib, "use", lambda backend, **kwargs: calls.append(backend))
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":0")
    plots.pyplot()  # pyplot is imported already in this session: its backend is in use
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
