import json

import matplotlib.pyplot as plt
import pytest

from rewardcollapse import plot_limit_laws, plot_optimal_rewards
from rewardcollapse.cli import main


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "solve" in capsys.readouterr().out


def test_solve_prints_summary_and_writes_files(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    assert main(["solve", "-n", "50", "--utility", "log", "--json", str(out_json), "--plot", str(out_png)]) == 0
    text = capsys.readouterr().out
    for key in ("objective", "KKT residual", "limit law", "Beta(0.5, 0.5)", "KS to limit"):
        assert key in text
    payload = json.loads(out_json.read_text())
    assert len(payload["rewards"]) == 50 and payload["success"] is True
    assert out_png.stat().st_size > 1000


def test_solve_tiers_and_edges(capsys):
    assert main(["solve", "--ranking", "[[0], [1, 2], [3]]", "--utility", "x"]) == 0
    assert main(["solve", "--ranking", '{"edges": [[0, 1], [1, 2]]}', "--utility=-1/x"]) == 0
    assert "objective" in capsys.readouterr().out


def test_solve_reports_bad_input(capsys):
    assert main(["solve", "-n", "5", "--utility", "x^2"]) == 2
    assert "`a` must be in (0, 1)" in capsys.readouterr().err
    assert main(["solve", "--ranking", "[[0]"]) == 2
    assert "--ranking is not valid JSON" in capsys.readouterr().err
    assert main(["solve", "--ranking", "[[0], [0]]"]) == 2
    capsys.readouterr()
    # Issue 15, finding 10: a malformed edges object, a ranking too large for memory, --plot with --ranking.
    assert main(["solve", "--ranking", '{"edges": 5}']) == 2
    assert 'as an object must be {"edges": [[i, j], ...]}' in capsys.readouterr().err
    assert main(["solve", "--ranking", '"abc"']) == 2
    assert "must be a JSON list of tiers" in capsys.readouterr().err


def test_solve_refuses_what_does_not_fit_before_allocating(capsys, tmp_path):
    assert main(["solve", "-n", "100000", "--utility", "log"]) == 2
    err = capsys.readouterr().err
    assert "need about 260.8 GiB" in err and "that fits now is about" in err
    out = tmp_path / "out.json"
    assert main(["solve", "--ranking", "[[0], [1]]", "--json", str(out), "--plot", str(tmp_path / "p.png")]) == 2
    assert "--plot draws n answers" in capsys.readouterr().err
    assert not out.exists()  # refused before anything was written


def test_demo_writes_figures(tmp_path, capsys):
    assert main(["demo", "-n", "40", "--output", str(tmp_path)]) == 0
    for name in ("optimal_rewards.png", "limit_laws.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 100
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {row["utility"] for row in summary} >= {"x", "log", "-1/x", "logsigmoid"}
    assert "Uniform(0, 1)" in capsys.readouterr().out


def test_plot_functions_return_fig_and_axes():
    fig, axes = plot_optimal_rewards(30, ["log", "x"])
    assert len(axes) == 2 and axes[0].get_title() == "U = log"
    fig2, ax = plot_limit_laws(["log", "-1/x"])
    assert len(ax.get_lines()) == 2
    _, given = plt.subplots(1, 2)
    fig3, _ = plot_optimal_rewards(20, ["log", "-1/x"], axes=given)
    assert fig3 is given[0].figure
    for f in (fig, fig2, fig3):
        plt.close(f)


def test_solve_refuses_huge_problems_before_building_them(capsys, monkeypatch):
    from rewardcollapse.core import solver

    def no_listing(ranking):
        raise AssertionError(f"the ranking of {ranking} answers was built before the memory check")

    monkeypatch.setattr(solver, "parse_ranking", no_listing)
    for n, spec in (("1000000000", "log"), ("100000000", "x")):
        assert main(["solve", "-n", n, "--utility", spec]) == 2
        assert f"`ranking`: {n} answers need about" in capsys.readouterr().err


def test_solve_refuses_a_figure_format_it_cannot_write(tmp_path, capsys):
    for name in ("out.xyz", "outnoext"):
        assert main(["solve", "-n", "5", "--plot", str(tmp_path / name), "--json", str(tmp_path / "j.json")]) == 2
        assert "the figure format comes from the suffix" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
