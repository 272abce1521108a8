"""Nothing lost, nothing silently wrong: one test (or more) per finding of the hostile try-out (issue 15).

Kills are real: a subprocess is stopped with SIGKILL at a known point (it prints ``ready`` there and waits), and the
files it leaves are checked; the same command is then run again.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from rewardcollapse.cli import main
from rewardcollapse.data import load_rankings

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rows(n=6, k=3):
    return [
        {"prompt": f"prompt {p}", "responses": [f"answer {p}-{a} " + "word " * a for a in range(k)], "openness": p % 2}
        for p in range(n)
    ]


def run_until_ready(script: str, cwd: Path) -> subprocess.Popen:
    """Start ``script`` in a Python subprocess and return once it prints ``ready`` (it then waits to be killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in process.stdout:
        if line.strip() == "ready":
            return process
    process.wait()
    raise AssertionError(f"the subprocess ended before it was ready: {process.stderr.read()[-2000:]}")


def kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


# 1. A `pairs` column is honoured, or refused where it conflicts with `ranks`.


def test_pairs_column_is_honoured(tmp_path):
    data = load_rankings(
        write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), "pairs": [[2, 0], [2, 1]]}])
    )
    row = data[0]
    assert row["pairs"] == [[2, 0], [2, 1]] and row["ranks"] is None
    from rewardcollapse.data import ranked_pairs

    assert ranked_pairs(row).tolist() == [[False] * 3, [False] * 3, [True, True, False]]


def test_pairs_reach_the_loss(tmp_path, tokenizer):
    from rewardcollapse.training.collator import RankingCollator

    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), "pairs": [[2, 0], [2, 1]]}])
    batch = RankingCollator(tokenizer, max_length=16)(load_rankings(path).to_list())
    assert batch["pairs"][0].tolist() == [[False] * 3, [False] * 3, [True, True, False]]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"ranks": [0, 1, 2], "pairs": [[2, 0]]}, "has both `ranks` and `pairs`; give one"),
        ({"pairs": [[0, 3]]}, r"`pairs\[0\]` must be \[i, j\] with i != j in 0..2, got \[0, 3\]"),
        ({"pairs": [[1, 1]]}, r"`pairs\[0\]` must be \[i, j\] with i != j"),
        ({"pairs": [[0, 1], [0, 1]]}, "lists a pair twice"),
        ({"pairs": [[0, 1], [1, 2], [2, 0]]}, r"contradict each other \((\d) above \d above \d above \1\)"),
        ({"pairs": []}, "got an empty list"),
    ],
)
def test_bad_pairs_are_refused_naming_the_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "p", "responses": list("abc"), **row}])
    with pytest.raises(ValueError, match=f"row 0: .*{message}"):
        load_rankings(path)


# 2. Output files are whole or untouched, even when the writer is killed; two writers never tear a file.


def test_a_killed_writer_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "rewards.jsonl"
    target.write_text("previous\n")
    script = f"""
        import time
        from rewardcollapse._files import atomic_write
        with atomic_write({str(target)!r}) as handle:
            for i in range(100000):
                handle.write("new line\\n")
                if i == 1000:
                    handle.flush()
                    print("ready", flush=True)
                    time.sleep(60)
    """
    kill(run_until_ready(script, tmp_path))
    assert target.read_text() == "previous\n"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".rewards.jsonl.") and ".partial" in leftovers[0]


def test_score_killed_while_writing_leaves_the_old_output(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "rewards.jsonl"
    output.write_text("the previous scores\n")
    script = f"""
        import time
        from scipy import special
        import rewardcollapse.training.run as run
        calls = []
        def slow_expit(x):
            calls.append(1)
            if len(calls) == 3:  # two rows written, the third being written
                print("ready", flush=True)
                time.sleep(60)
            return special.expit(x)
        run.special = type("S", (), {{"expit": staticmethod(slow_expit)}})
        from rewardcollapse.cli import main
        main(["score", "--model", {str(tiny_dir)!r}, "--data", {str(data)!r}, "--output", {str(output)!r},
              "--max-length", "64"])
    """
    kill(run_until_ready(script, tmp_path))
    assert output.read_text() == "the previous scores\n"
    assert (
        main(["score", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--max-length", "64"])
        == 0
    )
    assert len(output.read_text().splitlines()) == 8


def test_score_option_errors_leave_the_output_alone(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    output = tmp_path / "rewards.jsonl"
    output.write_text("kept\n")
    base = ["score", "--model", str(tiny_dir), "--data", str(data), "--output", str(output)]
    for option, value, message in [
        ("--batch-size", "0", "`batch_size` must be a positive integer, got 0"),
        ("--max-length", "0", "`max_length` must be a positive integer, got 0"),
        ("--forward-batch-size", "-1", "`forward_batch_size` must be a positive integer, got -1"),
    ]:
        assert main([*base, option, value]) == 2
        assert message in capsys.readouterr().err
        assert output.read_text() == "kept\n"
    assert main([*base[:-1], str(tmp_path)]) == 2
    assert "is a folder; give a file path" in capsys.readouterr().err


def test_two_writers_to_one_path_each_leave_a_whole_file(tmp_path):
    from rewardcollapse._files import atomic_write

    target = tmp_path / "out.jsonl"
    with atomic_write(target) as first, atomic_write(target) as second:
        first.write("first\n" * 1000)
        second.write("second\n" * 10)
    assert target.read_text() == "first\n" * 1000  # the last to finish; never a mix


# 3. Resume only from a complete checkpoint.


def train_args(tiny_dir, data, output, *extra):
    args = ["train", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--batch-size", "2"]
    return [*args, "--utility", "log", "--report_to", "none", "--max-length", "32", *extra]


def test_training_killed_while_saving_a_checkpoint_resumes_from_the_last_complete_one(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "model"
    args = train_args(tiny_dir, data, output, "--steps", "6", "--save_steps", "2")
    script = f"""
        import time
        from transformers import Trainer
        original = Trainer._save_rng_state
        def stop_at_step_4(self, output_dir):
            if output_dir.endswith("checkpoint-4"):  # weights and optimizer written, trainer_state.json not yet
                print("ready", flush=True)
                time.sleep(60)
            return original(self, output_dir)
        Trainer._save_rng_state = stop_at_step_4
        from rewardcollapse.cli import main
        main({args!r})
    """
    kill(run_until_ready(script, tmp_path))
    assert (output / "checkpoint-4" / "model.safetensors").exists()
    assert not (output / "checkpoint-4" / "trainer_state.json").exists()
    assert not (output / "training_summary.json").exists()
    with pytest.warns(UserWarning, match="skipping incomplete checkpoint .*checkpoint-4: no trainer_state.json"):
        assert main([*args, "--resume"]) == 0
    state = json.loads((output / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and json.loads((output / "training_summary.json").read_text())["steps"] == 6
    assert "model saved to" in capsys.readouterr().out


def test_checkpoint_completeness(tmp_path):
    from rewardcollapse.training.checkpoints import checkpoint_problem, last_complete_checkpoint, resume_checkpoint

    def checkpoint(step, files):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder

    whole = {"trainer_state.json": "{}", "model.safetensors": "w", "optimizer.pt": "o", "scheduler.pt": "s"}
    checkpoint(2, whole)
    checkpoint(4, {**whole, "trainer_state.json": '{"global_st'})
    checkpoint(6, {k: v for k, v in whole.items() if k != "optimizer.pt"})
    index = json.dumps({"weight_map": {"a": "model-1.safetensors", "b": "model-2.safetensors"}})
    checkpoint(8, {"trainer_state.json": "{}", "model.safetensors.index.json": index, "model-1.safetensors": "w"})
    assert (
        checkpoint_problem(tmp_path / "checkpoint-4")
        == "trainer_state.json is cut short (the checkpoint was interrupted)"
    )
    assert checkpoint_problem(tmp_path / "checkpoint-6") == "no optimizer.pt"
    assert checkpoint_problem(tmp_path / "checkpoint-6", needs_optimizer=False) is None
    assert checkpoint_problem(tmp_path / "checkpoint-8") == "weight shards missing: model-2.safetensors"
    with pytest.warns(UserWarning) as caught:
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert [str(w.message).split(":")[0].rsplit("-", 1)[1] for w in caught] == ["8", "6", "4"]
    with pytest.raises(ValueError, match=r"is not a complete checkpoint \(no optimizer.pt\)"):
        resume_checkpoint(str(tmp_path / "checkpoint-6"), tmp_path)
    with pytest.raises(ValueError, match=r"no complete checkpoint-\* folder"):
        resume_checkpoint(True, tmp_path / "nothing")


def test_an_interrupted_final_save_leaves_no_summary(tmp_path, tiny_dir, monkeypatch):
    from transformers import Trainer

    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "model"

    def broken_save(self, output_dir=None, _internal_call=False):
        Path(output_dir, "model.safetensors").write_text("half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_model", broken_save)
    assert main(train_args(tiny_dir, data, output, "--steps", "1", "--save_strategy", "no")) == 130
    assert sorted(p.name for p in output.iterdir()) == []  # nothing half-written in the model folder


# 5. File-system problems are found before the first step.


def test_train_refuses_an_unusable_output_before_training(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(train_args(tiny_dir, data, a_file, "--steps", "1")) == 2
    err = capsys.readouterr().err
    assert "`output_dir`" in err and "is an existing file, not a folder" in err and "it/s" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="runs as root: folder permissions are not enforced")
def test_train_refuses_an_unwritable_folder_before_training(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert main(train_args(tiny_dir, data, locked / "model", "--steps", "1")) == 2
    assert "cannot be written" in capsys.readouterr().err


# 6. Bad values are refused, not silently changed.


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps", "0"], "`max_steps` (--steps) must be at least 1, or -1"),
        (["--steps", "-5"], "`max_steps` (--steps) must be at least 1, or -1"),
        (["--epochs", "0"], "`num_train_epochs` (--epochs) must be > 0"),
        (["--steps", "2", "--gradient-accumulation", "0"], "`gradient_accumulation_steps` must be a positive integer"),
        (["--steps", "2", "--batch-size", "0"], "`per_device_train_batch_size` must be a positive integer"),
    ],
)
def test_train_refuses_schedules_that_train_nothing(tmp_path, tiny_dir, capsys, extra, message):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    assert main([*train_args(tiny_dir, data, tmp_path / "m"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_text_where_a_number_belongs_is_refused(tmp_path):
    path = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"prompt": "p", "responses": ["a", "b"], "openness": 0.5},
            {"prompt": "q", "responses": ["a", "b"], "openness": "NaN"},
        ],
    )
    with pytest.raises(ValueError, match="row 1: `openness` is NaN, not a number"):
        load_rankings(path)
    alone = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "q", "responses": ["a", "b"], "openness": "NaN"}])
    with pytest.raises(ValueError, match="row 0: `openness` must be a number in \\[0, 1\\]"):
        load_rankings(alone)
    from rewardcollapse.training import RankingRewardConfig

    with pytest.raises(TypeError, match="`learning_rate` must be a number, got the text '1e-4' \\(YAML reads"):
        RankingRewardConfig(output_dir=str(tmp_path), learning_rate="1e-4")
    with pytest.raises(TypeError, match="`max_steps` must be a number, got the text 'abc'"):
        RankingRewardConfig(output_dir=str(tmp_path), max_steps="abc")


# 7. The openness classifier file is validated.


@pytest.fixture
def classifier_file(tmp_path):
    import numpy as np

    from rewardcollapse.estimators import OpennessClassifier

    classifier = OpennessClassifier(None, 32, mean=np.zeros(4), scale=np.ones(4), coef=np.ones(4), intercept=0.0)
    return classifier.save(tmp_path / "clf")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(coef=[float("nan")] * 4), "`coef` must be a non-empty list of finite numbers"),
        (lambda s: s.update(scale=[0.0] * 4), "every `scale` entry must be > 0"),
        (lambda s: s.update(coef=[1.0] * 3), "mean, scale and coef must have one length"),
        (lambda s: s.pop("mean"), r"missing \['mean'\]"),
        (lambda s: s.update(encoder=5), "`encoder` must be null"),
        (lambda s: s.update(intercept="0"), "`intercept` must be a finite number"),
    ],
)
def test_corrupt_classifier_files_are_refused(classifier_file, change, message):
    from rewardcollapse.estimators import OpennessClassifier

    state = json.loads(classifier_file.read_text())
    change(state)
    classifier_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=message):
        OpennessClassifier.load(classifier_file)


def test_classifier_files_that_are_no_classifier(classifier_file):
    from rewardcollapse.estimators import OpennessClassifier

    classifier_file.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not an openness classifier file \\(format 'a JSON list'\\)"):
        OpennessClassifier.load(classifier_file)
    classifier_file.write_text('{"format": "rewardcollapse.Openn')
    with pytest.raises(ValueError, match="is not valid JSON"):
        OpennessClassifier.load(classifier_file)


# 8. diagnose: every input checked before anything is written.


def scored_row(openness=0.0, rewards=(0.9, 0.5, 0.1)):
    return {"prompt": "p", "responses": list("abc"), "openness": openness, "normalized_rewards": list(rewards)}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a file; give the JSONL file that `rewardcollapse score` wrote"),
        ("", "no rows"),
        ('[{"prompt": "p"}]\n', "line 1 is a JSON list, not an object"),
        ('{"prompt": "p", "responses": ["a", "b"], "openness": 0}\n', "line 1 has no `normalized_rewards`; score"),
        (json.dumps(scored_row(rewards=[float("nan")] * 3)) + "\n", "line 1: `normalized_rewards` must be 3 finite"),
        (
            json.dumps(scored_row()) + "\n" + json.dumps(scored_row(rewards=[0.5, 0.4])) + "\n",
            "line 2: `normalized_rewards` must be 3",
        ),
        (json.dumps({**scored_row(), "responses": ["a", "a", "b"]}) + "\n", "line 1: responses 0 and 1 are identical"),
        ("{bad\n", "line 1 is not valid JSON"),
    ],
)
def test_diagnose_names_the_bad_line_and_writes_nothing(tmp_path, capsys, content, message):
    rewards = tmp_path / "rewards.jsonl"
    if content is not None:
        rewards.write_text(content)
    output = tmp_path / "diagnosis"
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(output)]) == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


# 9. Broken data files: the file and line, not datasets' generic message.


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "responses": ["a", "b"]}\n{"prompt": x}\n',
            "line 3 is not valid JSON",
        ),
        (b"", "is empty: no rows to read"),
        (b'{"prompt": "\xff", "responses": ["a", "b"]}\n', "line 1 is not UTF-8 text"),
        (
            b'{"prompt": "p", "responses": ["a", "b"]}\n{"prompt": "q", "chosen": "a", "rejected": "b"}\n',
            "mixes ranking rows",
        ),
    ],
)
def test_broken_data_files_are_named_with_their_line(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_rankings(path)


def test_blank_lines_between_rows_are_fine(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "p", "responses": ["a", "b"]}\n\n{"prompt": "q", "responses": ["a", "b"]}\n')
    assert len(load_rankings(path)) == 2


# 10. The rest: model paths, chat messages, configuration files.


def test_model_paths_are_checked_before_any_work(tmp_path, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(2))
    empty = tmp_path / "empty"
    empty.mkdir()
    for model, message in [("/nonexistent/model", "does not exist"), (str(empty), "is a folder without config.json")]:
        assert main(["score", "--model", model, "--data", str(data), "--output", str(tmp_path / "o.jsonl")]) == 2
        assert f"`model` {model!r} {message}" in capsys.readouterr().err
        assert (
            main(["train", "--model", model, "--data", str(data), "--output", str(tmp_path / "m"), "--steps", "1"]) == 2
        )
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_a_chat_message_without_role_is_named(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": [{"content": "hi"}], "responses": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"row 0: `prompt` must be .*; message 0 has no 'role'"):
        load_rankings(path)


def test_configuration_files_give_one_line_errors(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("utilities: [x, -1/x\nseed: 0\n")
    cases = [
        (broken, "is not valid YAML at line"),
        (tmp_path / "missing.yaml", "is not a file"),
    ]
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("training:\n  max_steps: abc\n")
    cases.append((wrong, "`max_steps` must be a number, got the text 'abc'"))
    negative = tmp_path / "negative.yaml"
    negative.write_text("test_prompts: -3\n")
    cases.append((negative, "`test_prompts` must be a positive integer, got -3"))
    for path, message in cases:
        assert main(["reproduce", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# Second hostile try-out: what it found after the first round of fixes.


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


def test_nothing_left_after_skipping_is_an_error_not_an_empty_output(tmp_path, tiny_dir, capsys):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "p", "responses": ["only one"]}] * 3)
    output = tmp_path / "scores.jsonl"
    output.write_text("kept\n")
    with pytest.warns(UserWarning, match="dropped 3 of 3"):
        code = main(["score", "--model", str(tiny_dir), "--data", str(bad), "--output", str(output), "--skip-invalid"])
    assert code == 2 and "has no usable prompt left" in capsys.readouterr().err
    assert output.read_text() == "kept\n"
    with pytest.warns(UserWarning, match="dropped 3 of 3"):
        assert main([*train_args(tiny_dir, bad, tmp_path / "m", "--steps", "1"), "--skip_invalid"]) == 2
    assert "has no usable prompt left" in capsys.readouterr().err


def test_text_that_looks_like_json_stays_text_outside_csv(tmp_path):
    chat_text = json.dumps([{"role": "user", "content": "hi"}])
    rows_ = [{"prompt": chat_text, "responses": ["a", "b"]}, {"prompt": "[3, 1, 2]", "responses": ["[1]", "b"]}]
    data = load_rankings(write_jsonl(tmp_path / "d.jsonl", rows_))
    assert data["prompt"] == [chat_text, "[3, 1, 2]"] and data[1]["responses"] == ["[1]", "b"]
    csv = tmp_path / "d.csv"
    csv.write_text('prompt,responses\n[3 1 2],"[""a"", ""b""]"\n')  # a CSV cell holds the answer list as JSON
    assert load_rankings(csv)[0]["responses"] == ["a", "b"]


def test_ranks_beyond_int64_are_a_row_error(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "responses": ["a", "b"], "ranks": [0, 10**20]}])
    with pytest.raises(ValueError, match=r"row 0: `ranks\[1\]` must be an integer"):
        load_rankings(path)


def test_pairwise_rows_of_one_prompt_must_agree_and_carry_no_ranking_columns(tmp_path):
    rows_ = [
        {"prompt": "p", "chosen": "a", "rejected": "b", "openness": 0.0},
        {"prompt": "p", "chosen": "a", "rejected": "c", "openness": 1.0},
    ]
    with pytest.raises(ValueError, match="rows 0, 1: the pairs of one prompt disagree on `openness`"):
        load_rankings(write_jsonl(tmp_path / "d.jsonl", rows_))
    rows_ = [{"prompt": "p", "chosen": "a", "rejected": "b", "pairs": [[1, 0]]}]
    with pytest.raises(ValueError, match=r"with \['pairs'\] columns: each row is one pair"):
        load_rankings(write_jsonl(tmp_path / "e.jsonl", rows_))


def test_experiment_settings_are_checked_again_after_command_line_overrides(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("training:\n  max_steps: 1\n")
    out = tmp_path / "out"
    assert main(["reproduce", "--config", str(config), "--utilities", ",,", "--output", str(out)]) == 2
    assert "`utilities` must be a non-empty list" in capsys.readouterr().err
    config.write_text("openness_levels: [a, 1]\n")
    assert main(["reproduce", "--config", str(config), "--output", str(out)]) == 2
    assert "`openness_levels` must be a list of at least 2 numbers in [0, 1]" in capsys.readouterr().err
    config.write_text("training: []\n")
    assert main(["reproduce", "--config", str(config), "--output", str(out)]) == 2
    assert "`training` must be a mapping" in capsys.readouterr().err
    config.write_text("utilities: [x, 'x^abc']\n")
    assert main(["reproduce", "--config", str(config), "--output", str(out)]) == 2
    assert "`utilities`:" in capsys.readouterr().err
    assert not out.exists()
    assert main(["data", "longform", "--seed", "-5", "--output", str(out)]) == 2
    assert "`seed` must be a non-negative integer" in capsys.readouterr().err


def test_resume_past_the_last_step_and_training_into_the_backbone_are_refused(tmp_path, tiny_dir, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", rows(4))
    output = tmp_path / "m"
    assert main(train_args(tiny_dir, data, output, "--steps", "2", "--save_steps", "2")) == 0
    capsys.readouterr()
    assert main([*train_args(tiny_dir, data, output, "--steps", "1"), "--resume"]) == 2
    assert "is at step 2, at or past `max_steps` 1: nothing left to train" in capsys.readouterr().err
    assert main(train_args(tiny_dir, data, tiny_dir, "--steps", "1")) == 2
    assert "is the model folder itself" in capsys.readouterr().err


def test_writing_through_a_symbolic_link_keeps_the_link(tmp_path):
    from rewardcollapse._files import write_text_atomic

    target = tmp_path / "real.jsonl"
    target.write_text("old\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    write_text_atomic(link, "new\n")
    assert link.is_symlink() and target.read_text() == "new\n"


def test_ctrl_c_during_score_is_one_line_and_status_130(tmp_path, tiny_dir):
    data = write_jsonl(tmp_path / "d.jsonl", rows(8))
    output = tmp_path / "rewards.jsonl"
    output.write_text("the previous scores\n")
    script = f"""
        import time
        from scipy import special
        import rewardcollapse.training.run as run
        def slow_expit(x):
            print("ready", flush=True)
            time.sleep(60)
        run.special = type("S", (), {{"expit": staticmethod(slow_expit)}})
        from rewardcollapse.cli import main
        raise SystemExit(main(["score", "--model", {str(tiny_dir)!r}, "--data", {str(data)!r},
                               "--output", {str(output)!r}, "--max-length", "64"]))
    """
    process = run_until_ready(script, tmp_path)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    err = process.stderr.read()
    assert "interrupted: the outputs at their final paths" in err and "Traceback" not in err
    assert output.read_text() == "the previous scores\n"
