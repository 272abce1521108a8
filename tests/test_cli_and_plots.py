import json
import resource
import signal
import subprocess
import sys
import warnings
from importlib import metadata

import matplotlib.pyplot as plt
import pytest

from rewardcollapse import plot_limit_laws, plot_optimal_rewards
from rewardcollapse._files import LOCK_FILE
from rewardcollapse.cli import _commands, build_parser, command_parser, main

from .conftest import run_until_ready


def test_help_exits_zero(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "solve" in capsys.readouterr().out


def test_version_comes_from_the_package_metadata(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rewardcollapse {metadata.version('rewardcollapse')}"


@pytest.mark.parametrize("words", sorted(_commands()), ids=" ".join)
def test_every_command_has_help_for_every_option(words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*words, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: rewardcollapse {' '.join(words)}")
    for parser in {command_parser(words), command_parser(words, every_option=False)}:
        for action in parser._actions:
            assert action.help, f"{' '.join(words)} {action.option_strings} has no help"
    # A flag that defaults to on gets a --no_ twin, which says what it does rather than repeating the flag's help.
    options = {name: action for action in command_parser(["train"])._actions for name in action.option_strings}
    assert options["--no_disable_dropout"].help == "Turn disable_dropout off."
    assert options["--no_disable_dropout"].help != options["--disable_dropout"].help


def test_groups_list_their_commands(capsys):
    for group, commands in (("data", ["longform"]), ("openness", ["fit", "predict", "scores", "rankings"])):
        with pytest.raises(SystemExit):
            main([group, "--help"])
        out = capsys.readouterr().out
        assert all(command in out for command in commands)
    with pytest.raises(SystemExit) as exit_info:
        main(["data"])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err
    assert "data" in build_parser().format_help()


def test_unknown_options_are_refused_with_the_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["solve", "--bogus", "1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --bogus 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["score", "--model", "m", "--data", "d", "--output", "o", "--shared-prompt", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


def test_train_help_is_short_and_lists_the_project_options_first(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    short = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help-all"])
    full = capsys.readouterr().out
    assert short.startswith("usage: rewardcollapse train --data FILE --output DIR [options]")
    for option in ("--data", "--resume", "--lora_r", "--utility", "--normalize", "--output_dir", "--max_steps"):
        assert option in short and option in full
    for short_name in ("--steps", "--epochs", "--batch-size", "--gradient-accumulation", "--output"):
        assert short_name in short
    assert "--help-all" in short and "--lr_scheduler_type" not in short and "--lr_scheduler_type" in full
    assert len(short.splitlines()) < 200 < len(full.splitlines())
    assert short.index("--data") < short.index("--max_steps") < short.index("--utility") < short.index("--precision")


def test_train_and_score_share_one_definition_of_each_model_input_setting():
    import dataclasses

    from rewardcollapse.settings import ModelInput
    from rewardcollapse.training.collator import SEQUENCE_FORMATS
    from rewardcollapse.training.precision import PRECISIONS
    from rewardcollapse.training.shared_prompt import SHARED_PROMPT_SETTINGS

    score = {action.dest: action for action in command_parser(["score"])._actions}
    train = {action.dest: action for action in command_parser(["train"])._actions}
    for setting in dataclasses.fields(ModelInput):
        assert score[setting.name].default == train[setting.name].default == setting.default
        assert score[setting.name].help == train[setting.name].help == setting.metadata["help"]
    assert score["forward_batch_size"].default is None and score["max_length"].default == 512
    assert tuple(score["sequence_format"].choices) == ("auto", *SEQUENCE_FORMATS)
    assert tuple(score["shared_prompt"].choices) == SHARED_PROMPT_SETTINGS
    assert tuple(score["precision"].choices) == tuple(train["precision"].choices) == PRECISIONS
    assert "--max-length" in score["max_length"].option_strings and "bf16" not in score


@pytest.mark.parametrize("words", [[], ["train"], ["score"], ["reproduce"], ["data", "longform"], ["openness", "fit"]])
def test_help_imports_no_torch_and_is_quick(words):
    """``--help`` of the top level and of each command, in a fresh interpreter: no torch, and under 3 s.

    The time is the child's CPU time, which other processes on a busy machine do not inflate as they do its wall
    time (on an idle one the two agree); importing torch alone takes longer.
    """
    script = (
        "import sys\n"
        "from rewardcollapse.cli import main\n"
        "try:\n"
        f"    main({[*words, '--help']!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]\n"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("usage: rewardcollapse")
    assert seconds < 3


def test_warnings_print_as_one_line_without_the_source_line(capsys):
    # In a fresh interpreter: pytest records warnings itself, so Python's own printing is only seen outside it.
    script = (
        "import sys, warnings\n"
        "from rewardcollapse import cli\n"
        "def run(args):\n"
        "    warnings.warn('3 answers were cut\\n at max_length 16', UserWarning)\n"
        "    return 0\n"
        "cli._commands = lambda: {('solve',): cli._Command('h', lambda: (cli.SolveOptions,), run)}\n"
        "sys.exit(cli.main(['solve']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "warning: 3 answers were cut at max_length 16\n"
    shown = warnings.formatwarning
    assert main(["solve", "-n", "3"]) == 0
    assert warnings.formatwarning is shown  # the library called from Python keeps Python's format


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


def test_openness_rankings_names_the_ragged_rater(tmp_path, capsys):
    rows = [{"prompt": "p", "rankings": [[1, 2, 3], [3, 2, 1]]}, {"prompt": "q", "rankings": [[1, 2, 3], [2, 1]]}]
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "estimates.jsonl"
    assert main(["openness", "rankings", "--data", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "row 1, field 'rankings': `rankings` rater 1 ranks 2 answers but rater 0 ranks 3" in err
    assert "inhomogeneous" not in err and not out.exists()


def test_limits_writes_figures(tmp_path, capsys):
    assert main(["limits", "-n", "40", "--output", str(tmp_path)]) == 0
    for name in ("optimal_rewards.png", "limit_laws.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 100
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {row["utility"] for row in summary} >= {"x", "log", "-1/x", "logsigmoid"}
    assert "Uniform(0, 1)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["demo"])  # renamed to limits, no alias: `make demo` is the experiment
    assert "invalid choice: 'demo'" in capsys.readouterr().err


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


def test_an_error_after_the_output_check_leaves_no_folder_the_command_made(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "scores": [0.1, 0.9]}) + "\n" + json.dumps({"prompt": "q"}) + "\n")
    out = tmp_path / "new" / "deep"
    assert main(["openness", "scores", "--data", str(rows), "--output", str(out / "estimates.jsonl")]) == 2
    assert "row 1 has no 'scores' field" in capsys.readouterr().err
    assert main(["solve", "--ranking", "[[0]", "--json", str(out / "rewards.json")]) == 2
    capsys.readouterr()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_diagnose_checks_levels_and_rows_before_scoring(tmp_path, capsys):
    # The model does not exist: each refusal below comes before the model is loaded, let alone the answers scored.
    rows = [{"prompt": f"p{o}", "responses": list("abcd"), "openness": o} for o in (0.0, 1.0)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = tmp_path / "diagnosis"
    base = ["diagnose", "--model", str(tmp_path / "no-model"), "--data", str(data), "--output", str(output)]
    for levels, message in [
        (["2"], "each of `levels` [2.0] must be a number in [0, 1]"),
        (["0"], "`levels` [0.0] must name at least two openness levels"),
        (["0.1", "0.1001"], "`levels` [0.1, 0.1001] must differ in their first 3 significant digits"),
        (["0.5", "1"], f"--data {data}: row 0 has openness 0.0, which is none of the levels [0.5, 1.0]"),
    ]:
        assert main([*base, "--levels", *levels]) == 2
        assert message in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--data", "d.jsonl", "--output", "o", "--precision", "maybe"], "invalid choice: 'maybe'"),
        (["train", "--data", "d.jsonl", "--output", "o", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
        (["score", "--data", "d.jsonl"], "the following arguments are required: --model, --output"),
        (["train", "--data", "d.jsonl"], "the following arguments are required: --output_dir/--output"),
        (["reproduce", "--steps", "many"], "invalid int value: 'many'"),
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
    ],
    ids=["choice", "unknown", "required", "train-output-required", "type", "command"],
)
def test_usage_errors_are_one_line_pointing_to_help(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    prog = "rewardcollapse" if argv == ["bogus"] else f"rewardcollapse {argv[0]}"
    assert err.strip().endswith(f"; `{prog} --help` lists the options")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--output", "a", "--output_dir", "b"], "--output and --output_dir set the same option (output_dir)"),
        (["--output", "a", "--steps", "3", "--max_steps", "4"], "--steps and --max_steps set the same option"),
        (["--output", "a", "--max-steps", "3", "--max_steps", "4"], "--max-steps and --max_steps set the same option"),
        (["--output", "a", "--batch-size", "2", "--per_device_train_batch_size", "3"], "--batch-size and --per_device"),
        (["--output", "a", "--disable_dropout", "--no_disable_dropout"], "--disable_dropout and --no_disable_dropout"),
    ],
    ids=["output", "steps", "dashes", "batch-size", "negation"],
)
def test_one_setting_under_two_names_is_refused(tmp_path, capsys, options, message):
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), *options]) == 2
    err = capsys.readouterr().err
    assert message in err and "give it once, under one name" in err and len(err.strip().splitlines()) == 1


def test_the_same_name_twice_keeps_the_last_value_and_reproduce_names_both_spellings(tmp_path, capsys):
    assert main(["solve", "-n", "5", "-n", "7"]) == 0
    assert "answers       7" in capsys.readouterr().out
    output = ["--output", str(tmp_path / "out")]
    assert main(["reproduce", *output, "--levels", "0", "1", "--openness_levels", "0", "1"]) == 2
    assert "--levels and --openness_levels set the same option (openness_levels)" in capsys.readouterr().err


def test_json_options_nested_too_deep_are_refused_in_one_line(capsys):
    deep = "[" * 20_000 + "]" * 20_000
    assert main(["solve", "--ranking", deep]) == 2
    assert capsys.readouterr().err.startswith("error: --ranking is nested too deep")
    nested = '{"a": ' * 20_000 + "1" + "}" * 20_000
    assert main(["train", "--data", "d.jsonl", "--output", "o", "--lr_scheduler_kwargs", nested]) == 2
    assert capsys.readouterr().err.startswith("error: an option's JSON value is nested too deep")


def test_sigterm_unwinds_a_command_removing_its_lock_and_the_folders_it_made(tmp_path):
    output = tmp_path / "deep" / "out"
    script = f"""
        import sys, time
        import rewardcollapse.cli as cli
        from rewardcollapse._files import locked_output_folder

        def hold(args):
            with locked_output_folder({str(output)!r}, "--output"):
                print("ready", flush=True)
                time.sleep(60)
            return 0

        cli._limits = hold
        sys.exit(cli.main(["limits", "--output", {str(output)!r}]))
    """
    process = run_until_ready(script, tmp_path)
    assert (output / LOCK_FILE).exists()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 143
    err = process.stderr.read().strip()
    assert err.startswith("terminated (SIGTERM): the outputs at their final paths") and len(err.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []  # the lock file and the folders the job made are gone


def test_train_refuses_resume_and_resume_from_checkpoint_together(tmp_path, capsys):
    argv = ["train", "--data", "d.jsonl", "--output", str(tmp_path / "m"), "--resume", "--resume_from_checkpoint", "c"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --resume and --resume_from_checkpoint 'c' both say where to continue from")
    assert not (tmp_path / "m").exists()
