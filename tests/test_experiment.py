import json
import os
import re
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from scipy import stats

from rewardcollapse._files import locked_output_folder
from rewardcollapse.cli import main
from rewardcollapse.core import openness_utility, optimal_rewards
from rewardcollapse.data import load_rankings
from rewardcollapse.diagnostics import collapse_verdict, measure_ranked, targets_for
from rewardcollapse.experiments import (
    Diagnosis,
    ExperimentConfig,
    ExperimentResult,
    UtilityResult,
    diagnose_file,
    optimum_accuracy,
    read_scored,
    summary_text,
    utility_slug,
)
from rewardcollapse.experiments.longform import (
    CLOSED_LENGTHS,
    CLOSED_SUFFIX,
    OPEN_LENGTHS,
    OPEN_SUFFIX,
    build_longform,
    builtin_corpus,
    level_lengths,
    write_longform,
)
from rewardcollapse.experiments.report import crossings

from .conftest import kill, run_until_ready, write_jsonl

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(autouse=True)
def quiet_datasets():
    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


def longform_file(path, n=40, short=5, invalid=2):
    """Rows in LongForm's format: `input`, `output`; the answers number their words so cuts can be checked."""
    rows = [
        {"input": f"Tell me about topic {i}.", "output": " ".join(f"w{i}_{k}" for k in range(120))} for i in range(n)
    ]
    rows += [{"input": f"Short {i}.", "output": "too short " * 10} for i in range(short)]
    rows += [{"input": f"Broken {i}.", "output": None} for i in range(invalid)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_longform_builder_lengths_suffixes_balance(tmp_path):
    with pytest.warns(UserWarning, match=r"2 rows have no string 'input' and 'output' .*rows \[45, 46\]"):
        data = build_longform(longform_file(tmp_path / "lf.jsonl"), train_prompts=30, test_prompts=10, seed=3)
    assert data.report["rows_read"] == 47 and data.report["rows_usable"] == 40
    assert data.report["rows_too_short"] == 5 and data.report["rows_invalid"] == 2
    assert len(data.train) == 30 and len(data.test) == 10
    for rows in (data.train, data.test):
        kinds = [r["type"] for r in rows]
        assert kinds.count("open") == kinds.count("closed")
    for row in data.train + data.test:
        words = [len(r.split()) for r in row["responses"]]
        if row["type"] == "open":
            assert row["prompt"].endswith(OPEN_SUFFIX)
            assert words == sorted(OPEN_LENGTHS, reverse=True)
            assert row["utility"] == "-1/x" and row["openness"] == 1.0
        else:
            assert row["prompt"].endswith(CLOSED_SUFFIX)
            assert words == sorted(CLOSED_LENGTHS, reverse=True)
            assert row["utility"] == "x" and row["openness"] == 0.0
        assert row["ranks"] == list(range(8))
        # Each answer is a prefix of the source answer: cuts, not rewrites.
        source = row["responses"][0].split()
        assert all(source[: len(r.split())] == r.split() for r in row["responses"])
    prompts = {r["prompt"] for r in data.train} | {r["prompt"] for r in data.test}
    assert len(prompts) == 40  # no prompt in both splits


def test_longform_builder_is_seeded(tmp_path):
    path = longform_file(tmp_path / "lf.jsonl", invalid=0)
    a = build_longform(path, train_prompts=20, test_prompts=6, seed=1)
    b = build_longform(path, train_prompts=20, test_prompts=6, seed=1)
    c = build_longform(path, train_prompts=20, test_prompts=6, seed=2)
    assert a.train == b.train and a.test == b.test
    assert [r["prompt"] for r in a.train] != [r["prompt"] for r in c.train]


def test_longform_builder_errors(tmp_path):
    path = longform_file(tmp_path / "lf.jsonl", n=3, invalid=0)
    with pytest.raises(ValueError, match="only 3 rows have an answer of at least 100 words"):
        build_longform(path, test_prompts=4)
    with pytest.raises(ValueError, match="`min_words` must be at least 80"):
        build_longform(path, test_prompts=1, min_words=50)
    with pytest.raises(ValueError, match="`test_prompts` must be >= 1"):
        build_longform(path, test_prompts=0)
    (tmp_path / "other.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(ValueError, match=r"lacks the LongForm columns \['input', 'output'\]"):
        build_longform(tmp_path / "other.jsonl")


def test_written_dataset_loads_as_rankings(tmp_path):
    data = build_longform(longform_file(tmp_path / "lf.jsonl", invalid=0), train_prompts=10, test_prompts=4)
    for file_format in ("jsonl", "parquet"):
        paths = write_longform(data, tmp_path / file_format, file_format=file_format)
        train = load_rankings(paths["train"])
        assert train.num_rows == 10 and train[0]["ranks"] == list(range(8))
        assert set(train["utility"]) == {"x", "-1/x"}
        card = paths["card"].read_text()
        assert "10 training prompts, 4 test prompts" in card and "longer is better" in card
    with pytest.raises(ValueError, match="`file_format` must be"):
        write_longform(data, tmp_path / "x", file_format="csv")


def test_builtin_corpus_is_real_text_and_deterministic():
    rows = builtin_corpus()
    assert len(rows) >= 2000
    assert all(len(r["output"].split()) >= 100 for r in rows)
    assert len({r["output"] for r in rows}) == len(rows)
    assert rows[0]["input"].startswith("Explain what numpy.")
    assert builtin_corpus(("numpy.linalg",)) == builtin_corpus(("numpy.linalg",))
    with pytest.warns(UserWarning, match="not installed"):
        assert builtin_corpus(("no_such_module_here",)) == []


def test_experiment_config_yaml(tmp_path):
    paper = ExperimentConfig.from_yaml(CONFIGS / "paper.yaml")
    training = paper.training
    assert paper.model == "microsoft/deberta-v3-base" and training["max_steps"] == 1000
    assert training["learning_rate"] == 1e-5 and training["gradient_accumulation_steps"] == 8
    assert training["max_length"] == 512 and paper.train_prompts == 8192 and paper.test_prompts == 16
    args = paper.training_arguments()
    assert args.max_steps == 1000 and args.gradient_accumulation_steps == 8 and args.seed == paper.seed
    demo = ExperimentConfig.from_yaml(CONFIGS / "demo.yaml")
    assert {"x", "-1/x", "prompt-aware"} <= set(demo.utilities) and demo.test_prompts >= 100
    (tmp_path / "bad.yaml").write_text("training:\n  max_steps: 3\nlearning_rte: 1\n")
    with pytest.raises(ValueError, match=r"unknown settings \['learning_rte'\]"):
        ExperimentConfig.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("training:\n  learning_rte: 1\n")
    with pytest.raises(ValueError, match=r"`training` has \['learning_rte'\], which are not RankingRewardConfig"):
        ExperimentConfig.from_yaml(tmp_path / "typo.yaml").training_arguments()
    (tmp_path / "seeded.yaml").write_text("training:\n  seed: 3\n")
    with pytest.raises(ValueError, match=r"`training` must not set \['seed'\]"):
        ExperimentConfig.from_yaml(tmp_path / "seeded.yaml").training_arguments()


def test_flat_training_keys_are_refused_with_where_they_belong(tmp_path):
    (tmp_path / "old.yaml").write_text("steps: 3\nbatch_size: 2\nlearning_rate: 1.0e-4\nbf16: false\nseed: 4\n")
    with pytest.raises(ValueError) as refused:
        ExperimentConfig.from_yaml(tmp_path / "old.yaml")
    message = str(refused.value)
    assert "unknown settings ['batch_size', 'bf16', 'learning_rate', 'steps']" in message
    assert "go under `training:` as RankingRewardConfig fields (" in message
    for moved in ("per_device_train_batch_size: 2", "bf16: False", "learning_rate: 0.0001", "max_steps: 3"):
        assert moved in message
    (tmp_path / "new.yaml").write_text(
        "seed: 4\ntraining:\n  max_steps: 3\n  learning_rate: 1.0e-4\n  precision: fp32\n"
    )
    args = ExperimentConfig.from_yaml(tmp_path / "new.yaml").training_arguments()
    assert (args.max_steps, args.learning_rate, args.seed, args.precision) == (3, 1e-4, 4, "fp32")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="must be a mapping"):
        ExperimentConfig.from_yaml(tmp_path / "list.yaml")
    assert utility_slug("-1/x") == "neg1_over_x" and utility_slug("prompt-aware") == "prompt-aware"


def test_data_and_diagnose_commands(tmp_path, tiny_dir, capsys):
    source = longform_file(tmp_path / "lf.jsonl", invalid=0)
    out = tmp_path / "built"
    args = ["data", "longform", "--source", str(source), "--output", str(out), "--train-prompts", "8"]
    assert main([*args, "--test-prompts", "6"]) == 0
    printed = capsys.readouterr().out
    assert "usable (>= 100 words)  40" in printed and "train prompts          8 (asked 8)" in printed
    assert (out / "train.jsonl").exists() and (out / "README.md").exists()

    rewards = tmp_path / "rewards.jsonl"
    targets = targets_for(8)
    with rewards.open("w") as handle:
        for p in range(6):
            kind = "open" if p % 2 else "closed"
            row = {"prompt": f"p{p}", "responses": list("abcdefgh"), "ranks": list(range(8)), "pairs": None}
            row.update(openness=float(kind == "open"), normalized_rewards=targets[kind][::1].tolist())
            handle.write(json.dumps(row) + "\n")
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "diag")]) == 0
    printed = capsys.readouterr().out
    assert "collapse index 1.000" in printed and "| open | 3 |" in printed
    assert json.loads((tmp_path / "diag" / "diagnostics.json").read_text())["collapse_index"] == 1.0
    assert (tmp_path / "diag" / "rewards.png").stat().st_size > 0
    assert diagnose_file(rewards).by_group["closed"].wasserstein == 0.0

    # Scoring first, from a model and a data file.
    args = ["diagnose", "--model", str(tiny_dir), "--data", str(out / "test.jsonl"), "--output", str(tmp_path / "d2")]
    with pytest.warns(UserWarning, match="`max_length` 512 exceeds the model's 128 positions"):
        assert main(args) == 0
    assert (tmp_path / "d2" / "rewards.jsonl").exists()
    assert main(["diagnose", "--output", str(tmp_path / "d3")]) == 2
    assert "give --rewards FILE" in capsys.readouterr().err


def test_diagnose_scores_a_pairwise_file_per_prompt(tmp_path, tiny_dir, capsys):
    rows = [
        {"prompt": f"prompt {p}", "chosen": f"answer {a} " * 3, "rejected": f"answer {a + 1}", "openness": p % 2}
        for p in range(4)
        for a in range(2)
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "diagnosis"
    args = ["diagnose", "--model", str(tiny_dir), "--data", str(data), "--output", str(output), "--max-length", "64"]
    assert main(args) == 0
    scored = [json.loads(line) for line in (output / "rewards.jsonl").read_text().splitlines()]
    assert len(scored) == 4 and all(len(row["rewards"]) == 4 for row in scored)  # rankings, as diagnose reads
    assert "collapse index" in capsys.readouterr().out


def tiny_config(tmp_path, tiny_dir, *, test_prompts):
    """A reproduce configuration of 2 steps on a tiny BERT and a LongForm-format file."""
    source = longform_file(tmp_path / "lf.jsonl", invalid=0)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        f"source: {source}\ntrain_prompts: 8\ntest_prompts: {test_prompts}\nmodel: {tiny_dir}\ntraining:\n"
        "  max_steps: 2\n  per_device_train_batch_size: 4\n  max_length: 128\n  forward_batch_size: 16\n"
        "  learning_rate: 1.0e-3\n  precision: fp32\n"
    )
    return config


@pytest.mark.slow
def test_reproduce_writes_every_output_and_resumes(tmp_path, tiny_dir, capsys):
    config = tiny_config(tmp_path, tiny_dir, test_prompts=6)
    out = tmp_path / "run"
    assert main(["reproduce", "--config", str(config), "--utilities", "x,prompt-aware", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| utility | collapse index |" in printed and "| prompt-aware |" in printed
    report = json.loads((out / "report.json").read_text())
    assert list(report) == [
        *("utilities", "references", "figure", "curves_figure", "report_md", "report_json", "config", "data"),
        *("precision", "seconds", "estimated_seconds"),
    ]
    assert set(report["utilities"]) == {"x", "prompt-aware"}
    assert list(report["utilities"]["x"]) == [
        *("collapse_index", "groups", "rewards_path", "reused", "verdict", "pairwise_accuracy"),
        *("optimum_pairwise_accuracy", "label_free", "curve", "crossings", "curve_seconds", "training_seconds"),
    ]
    assert report["estimated_seconds"] > 0 and report["curves_figure"] == str(out / "collapse_over_training.png")
    # Reused runs keep their curves; the untrained reference is scored once and reused too.
    assert (out / "runs" / "untrained" / "rewards.jsonl").exists()
    curves = {spec: report["utilities"][spec]["curve"] for spec in ("x", "prompt-aware")}
    for spec in ("x", "prompt-aware"):
        entry = report["utilities"][spec]
        assert np.isfinite(entry["collapse_index"]) and set(entry["groups"]) == {"open", "closed"}
        lines = Path(entry["rewards_path"]).read_text().splitlines()
        assert len(lines) == 6 and len(json.loads(lines[0])["normalized_rewards"]) == 8
    assert (out / "rewards.png").stat().st_size > 0
    assert ExperimentConfig.from_yaml(out / "config.yaml").utilities == ["x", "prompt-aware"]
    assert (out / "data" / "train.jsonl").exists() and (out / "report.md").read_text().count("\n| ") >= 3

    # A rerun with one more utility trains only that one.
    scored = out / "runs" / "x" / "rewards.jsonl"
    before = scored.stat().st_mtime_ns
    assert main(["reproduce", "--config", str(config), "--utilities", "x,prompt-aware,log", "--output", str(out)]) == 0
    assert scored.stat().st_mtime_ns == before
    said = capsys.readouterr().err
    assert "untrained model (every run's step 0): finished earlier with the same settings: reused" in said
    again = json.loads((out / "report.json").read_text())
    assert set(again["utilities"]) == {"x", "prompt-aware", "log"}
    assert {spec: again["utilities"][spec]["curve"] for spec in ("x", "prompt-aware")} == curves
    assert main(["reproduce", "--config", str(config), "--utilities", "cubic", "--output", str(out)]) == 2


@pytest.mark.parametrize("openness", [0.0, 0.1, 1 / 3, 0.5, 2 / 3, 1.0])
def test_level_lengths_follow_the_target_quantiles(openness):
    lengths = np.array(level_lengths(openness))
    assert lengths.size == 8 and np.all(np.diff(lengths) >= 1) and lengths[0] == 4 and lengths[-1] == 40
    assert np.all(lengths + lengths[::-1] == 44)  # symmetric like the target law
    target = np.sort(optimal_rewards(8, openness_utility(openness)).rewards)
    # Within rounding of the quantiles, except where two cuts would be equal and are pushed 1 word apart.
    pushed = np.abs(lengths - (4 + 36 * target))
    assert np.all((pushed <= 0.5 + 1e-9) | (np.arange(8) % 7 != 0) & (pushed <= 3))
    wide = np.array(level_lengths(openness, shortest=10, longest=800))
    assert np.max(np.abs(wide - (10 + 790 * target))) <= 3.5  # spread out, the quantiles come through


def test_level_lengths_edges_and_errors():
    assert level_lengths(0.0) == (4, 5, 6, 7, 37, 38, 39, 40)
    assert level_lengths(1.0, answers=2) == (4, 40)
    assert level_lengths(1.0, answers=3) == (4, 22, 40)
    with pytest.raises(ValueError, match="do not fit between 4 and 10 words"):
        level_lengths(0.5, longest=10)
    with pytest.raises(ValueError, match="`answers` must be at least 2"):
        level_lengths(0.5, answers=1)


def test_longform_builder_with_openness_levels(tmp_path):
    levels = [0.0, 0.25, 0.75, 1.0]
    data = build_longform(
        longform_file(tmp_path / "lf.jsonl", invalid=0), train_prompts=22, test_prompts=8, levels=levels
    )
    assert data.report["levels"] == levels
    counts = {o: [r["openness"] for r in data.train].count(o) for o in levels}
    assert sorted(counts.values()) == [5, 5, 6, 6]  # 22 over 4 levels, the first ones once more
    assert all([r["openness"] for r in data.test].count(o) == 2 for o in levels)
    for row in data.train + data.test:
        o = row["openness"]
        assert row["prompt"].endswith(f" Write an answer of openness {o:.2f}.")
        assert row["lengths"] == sorted(level_lengths(o), reverse=True)
        assert [len(r.split()) for r in row["responses"]] == row["lengths"]
        assert row["utility"] == openness_utility(o).name and row["ranks"] == list(range(8))
    paths = write_longform(data, tmp_path / "out")
    card = paths["card"].read_text()
    assert 'openness 0.25 (`openness` 0.25, `utility` "x^0.5")' in card and "lengths 4, 5, 6, 7, 37" in card
    assert len(load_rankings(paths["train"])) == 22
    args = ["data", "longform", "--source", str(tmp_path / "lf.jsonl"), "--output", str(tmp_path / "cli")]
    assert main([*args, "--test-prompts", "4", "--levels", "0", "0.5"]) == 0
    written = [json.loads(line) for line in (tmp_path / "cli" / "test.jsonl").read_text().splitlines()]
    assert sorted(r["openness"] for r in written) == [0.0, 0.0, 0.5, 0.5]
    for bad, message in (
        ([0.5], "at least two distinct"),
        ([0.2, 0.2], "at least two distinct"),
        ([0, 1.5], r"\[1.5\]"),
    ):
        with pytest.raises(ValueError, match=message):
            build_longform(longform_file(tmp_path / "lf.jsonl", invalid=0), test_prompts=4, levels=bad)


def test_level_diagnostics_and_errors(tmp_path, capsys):
    levels = [0.0, 0.5, 1.0]
    targets = targets_for(8, levels)
    assert list(targets) == ["o=0", "o=0.5", "o=1"]
    np.testing.assert_allclose(targets["o=0.5"], np.sort(optimal_rewards(8, "log").rewards))
    rewards = tmp_path / "rewards.jsonl"
    with rewards.open("w") as handle:
        for p in range(6):
            o = levels[p % 3]
            row = {"prompt": f"p{p}", "responses": list("abcdefgh"), "ranks": list(range(8)), "openness": o}
            handle.write(json.dumps({**row, "normalized_rewards": targets[f"o={o:g}"][::-1].tolist()}) + "\n")
    result = diagnose_file(rewards, levels)
    assert list(result.by_group) == ["o=0", "o=0.5", "o=1"] and result.collapse_index == pytest.approx(1.0)
    assert result.groups == ["o=0", "o=0.5", "o=1"] * 2 and len(result.rows) == len(result.rewards) == 6
    assert list(result.targets) == ["o=0", "o=0.5", "o=1"]
    np.testing.assert_array_equal(result.targets["o=1"], targets["o=1"])
    for group in result.by_group.values():
        assert group.ks == 0.0 and group.wasserstein == 0.0 and group.kendall_tau > 0
    # The 4 + 4 answers tied at 0 and 1 score half for their 12 tied pairs.
    accuracies = [g.pairwise_accuracy for g in result.by_group.values()]
    assert accuracies == [pytest.approx(22 / 28), 1.0, 1.0]
    assert result.overall("pairwise_accuracy") == pytest.approx((22 / 28 + 2) / 3)
    # Against the limit laws: exact for the atoms of openness 0, the 8-point discreteness (1/16) for Beta(1, 1).
    assert result.by_group["o=0"].ks_limit == 0.0
    assert result.by_group["o=1"].ks_limit == pytest.approx(stats.kstest(targets["o=1"], stats.uniform.cdf).statistic)
    with pytest.raises(ValueError, match=r"line 2 has openness 0.5, which is none of the levels \[0.0, 1.0\]"):
        read_scored(rewards, [0.0, 1.0])
    assert (
        main(["diagnose", "--rewards", str(rewards), "--levels", "0", "0.5", "1", "--output", str(tmp_path / "d")]) == 0
    )
    assert "| o=0.5 | 2 | 0.000 | 0.000 |" in capsys.readouterr().out


@pytest.mark.slow
def test_reproduce_with_openness_levels(tmp_path, tiny_dir, capsys):
    config = tiny_config(tmp_path, tiny_dir, test_prompts=8)
    out = tmp_path / "run"
    args = ["reproduce", "--config", str(config), "--utilities", "openness,log", "--output", str(out)]
    assert main([*args, "--levels", "0", "0.333", "0.667", "1"]) == 0
    printed = capsys.readouterr().out
    assert "KS distance to the level's 8-answer target" in printed
    assert "| utility | o=0 | o=0.333 | o=0.667 | o=1 | mean | collapse index | pairwise accuracy |" in printed
    report = json.loads((out / "report.json").read_text())
    for spec in ("openness", "log"):
        groups = report["utilities"][spec]["groups"]
        assert list(groups) == ["o=0", "o=0.333", "o=0.667", "o=1"]
        assert all(0 <= g["ks"] <= 1 and 0 <= g["ks_limit"] <= 1 and g["prompts"] == 2 for g in groups.values())
    assert ExperimentConfig.from_yaml(out / "config.yaml").openness_levels == [0.0, 0.333, 0.667, 1.0]
    assert (out / "runs" / "openness" / "model").is_dir() and (out / "rewards.png").stat().st_size > 0
    assert main([*args, "--levels", "0.3331", "0.3334"]) == 2
    assert "must differ in their first 3 significant digits" in capsys.readouterr().err


def test_length_scale_halves_the_cuts(tmp_path):
    source = longform_file(tmp_path / "lf.jsonl", invalid=0)
    data = build_longform(source, train_prompts=4, test_prompts=4, length_scale=0.5)
    for row in data.train + data.test:
        paper = OPEN_LENGTHS if row["type"] == "open" else CLOSED_LENGTHS
        assert row["lengths"] == sorted((n // 2 for n in paper), reverse=True)
        assert [len(answer.split()) for answer in row["responses"]] == row["lengths"]
    assert data.report["length_scale"] == 0.5
    card = write_longform(data, tmp_path / "out")["card"].read_text()
    assert "lengths 5, 10, 15, 20, 25, 30, 35, 40 words" in card and "lengths 8, 11, 14, 17, 28" in card
    with pytest.raises(ValueError, match="not distinct positive word counts; use a larger scale"):
        build_longform(source, test_prompts=2, length_scale=0.05)
    with pytest.raises(ValueError, match=r"`length_scale` must be in \(0, 1\]"):
        build_longform(source, test_prompts=2, length_scale=2)


def test_optimum_accuracy_counts_the_ties_of_x_as_half():
    rows = [
        {"responses": list("abcdefgh"), "ranks": list(range(8)), "pairs": None, "openness": o, "utility": None}
        for o in (0.0, 1.0)
    ]
    # x puts the top four answers at 1 and the others at 0: 16 pairs right, 12 tied of 28.
    assert optimum_accuracy(rows[:1], "x") == pytest.approx(22 / 28)
    assert optimum_accuracy(rows, "-1/x") == 1.0
    assert optimum_accuracy(rows, "prompt-aware") == pytest.approx(50 / 56)
    assert optimum_accuracy(rows, "openness") == pytest.approx(50 / 56)
    partial = {"responses": list("abc"), "ranks": None, "pairs": [[0, 1], [0, 2]], "openness": 0.0}
    assert optimum_accuracy([partial], "x") == 1.0
    tied = {"responses": list("abcd"), "ranks": [0, 1, 1, 2], "pairs": None, "openness": 0.0}
    assert optimum_accuracy([tied], "log") == 1.0


def _report(indices, curves=None):
    rows = [{"prompt": f"p{b}", "responses": list("abcdefgh"), "openness": float(b % 2)} for b in range(4)]
    measures = measure_ranked(rows, [targets_for(8)["open" if b % 2 else "closed"] for b in range(4)], utility="x")
    utilities = {
        spec: UtilityResult(
            diagnosis=Diagnosis(
                rows=[], rewards=[], groups=[], pairs=[], targets={}, collapse_index=value, by_group={}
            ),
            verdict=collapse_verdict(value),
            pairwise_accuracy=0.9,
            optimum_pairwise_accuracy=0.89,
            rewards_path=Path("out/runs") / spec / "rewards.jsonl",
            reused=spec == "x",
            measures=measures,
            curve=(curves or {}).get(spec, []),
        )
        for spec, value in indices.items()
    }
    paths = {
        "figure": "out/rewards.png",
        "report_md": "out/report.md",
        "report_json": "r.json",
        "config": "c",
        "data": "d",
    }
    return ExperimentResult(
        utilities=utilities,
        references={},
        curves_figure=Path("out/collapse_over_training.png") if curves else None,
        **{k: Path(v) for k, v in paths.items()},
        precision="fp32",
        seconds=401.0,
        estimated_seconds=380.4,
    )


def test_summary_says_plainly_whether_the_finding_was_reproduced():
    text = summary_text(_report({"x": 0.05, "-1/x": 0.2, "prompt-aware": 0.8}))
    assert "  x             0.05  collapsed " in text and "[reused]" in text
    assert "  prompt-aware  0.80  separated " in text and "(its utility's exact optimum: 0.89)" in text
    assert "The paper's finding, reproduced: with a fixed utility (x, -1/x)" in text and "NOT" not in text
    assert "out/rewards.png: a row per utility" in text
    assert text.splitlines()[-1] == "total time: 6 min 41 s (expected: 6 min 20 s)"
    assert "During training" not in text  # no curves
    text = summary_text(_report({"x": 0.3, "prompt-aware": 0.5}))
    assert "0.30  partly separated" in text and "reproduced:" not in text
    assert "NOT reproduced by this run: x 0.30 is not <= 0.25; prompt-aware 0.50 is not >= 0.6." in text
    text = summary_text(_report({"openness": 0.8, "-1/x": 0.5}), levels=[0, 1])
    assert "across openness levels" in text and "reproduced" not in text


def test_summary_says_when_each_curve_crossed_the_thresholds():
    def curve(*values):
        return [{"step": 50 * k, "collapse/index": v} for k, v in enumerate(values)]

    curves = {
        "x": curve(0.3, 0.2, 0.1, 0.05),
        "-1/x": curve(0.3, 0.2, 0.3, 0.2),
        "prompt-aware": curve(0.3, 0.5, 0.7, 0.8),
    }
    text = summary_text(_report({"x": 0.05, "-1/x": 0.2, "prompt-aware": 0.8}, curves))
    assert "  the untrained model (step 0) reads 0.30" in text
    assert "  x: collapsed (<= 0.25) from step 50 on" in text
    assert "  -1/x: collapsed (<= 0.25) from step 150 on" in text  # it left the band at step 100 and came back
    assert "  prompt-aware: separated (>= 0.6) from step 100 on" in text
    assert "curves: out/collapse_over_training.png" in text
    assert crossings(curve(0.3, 0.4)) == {"collapsed": None, "separated": None}


@pytest.mark.slow
def test_reproduce_survives_an_interrupt_and_reruns_honestly(tmp_path, tiny_dir, capsys, monkeypatch):
    import rewardcollapse.training.run as run_module

    config = tiny_config(tmp_path, tiny_dir, test_prompts=4)
    out = tmp_path / "run"
    args = ["reproduce", "--config", str(config), "--utilities", "x,log", "--output", str(out)]
    train = run_module.train_reward_model

    def interrupted(**kwargs):
        if kwargs["utility"] == "log":
            (Path(kwargs["output_dir"]) / "model.safetensors").write_text("half")
            raise KeyboardInterrupt
        return train(**kwargs)

    monkeypatch.setattr(run_module, "train_reward_model", interrupted)
    assert main(args) == 130
    assert "interrupted: finished utilities are kept" in capsys.readouterr().err
    assert (out / "runs" / "x" / "run.json").exists() and (out / "runs" / "x" / "model").is_dir()
    assert sorted(p.name for p in (out / "runs" / "log").iterdir()) == []  # nothing half-written kept
    assert not (out / "report.md").exists()

    monkeypatch.setattr(run_module, "train_reward_model", train)
    scored = out / "runs" / "x" / "rewards.jsonl"
    before = scored.stat().st_mtime_ns
    assert main(args) == 0
    messages = capsys.readouterr().err
    assert "data: reusing the dataset built earlier with the same settings" in messages
    assert "[1/2] x: finished earlier with the same settings: reused" in messages
    assert "[2/2] log: interrupted before it finished: training it again" in messages
    assert scored.stat().st_mtime_ns == before
    assert json.loads((out / "runs" / "log" / "run.json").read_text())["settings"]["max_steps"] == 2

    assert main([*args, "--steps", "3"]) == 0
    messages = capsys.readouterr().err
    assert "[1/2] x: settings changed (max_steps 2 -> 3): training it again" in messages
    assert json.loads((out / "runs" / "x" / "run.json").read_text())["training"]["steps"] == 3
    assert "steps" in (out / "report.md").read_text() and "3 steps" in (out / "report.md").read_text()


@pytest.mark.slow
def test_demo_configuration_runs_end_to_end_on_a_tiny_model(tmp_path, tiny_dir, capsys, monkeypatch):
    """The `make demo` path (configs/demo.yaml, built-in corpus) with a tiny model and 4 steps instead of MiniLM.

    The 4 steps read 8 training prompts, so the run builds 16 instead of the demo's 2000 (tokenising those for each
    utility was most of this test's time); the demo's own data, at its full size, is built after it. The machine
    pretends to be the slowest CPU (AVX2 kernels, no native bf16), where `precision: auto` resolves to float32: the
    first line must give that reason, not "asked for" (it used to resolve twice).
    """
    config = (CONFIGS / "demo.yaml").read_text()
    for pattern, value in ((r"^train_prompts: \d+", "train_prompts: 16"), (r"freeze_layers: \d+", "freeze_layers: 1")):
        config, replaced = re.subn(pattern, value, config, flags=re.MULTILINE)
        assert replaced == 1
    config, _ = re.subn(r"^collapse_every: \d+", "collapse_every: 2", config, flags=re.MULTILINE)
    (tmp_path / "demo.yaml").write_text(config)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    out = tmp_path / "demo"
    args = ["reproduce", "--config", str(tmp_path / "demo.yaml"), "--model", str(tiny_dir), "--steps", "4"]
    assert main([*args, "--output", str(out)]) == 0
    captured = capsys.readouterr()
    first = captured.err.splitlines()[0]
    assert first.startswith("reward collapse, the paper's experiment") and "4 steps" in first
    assert first.endswith("float32 on cpu (no native bf16 on this CPU: emulated bf16 is about 25x slower)")
    assert "expected: about " in captured.err and "LOAD REPORT" not in captured.err and "{'loss'" not in captured.err
    assert "Collapse index: 0 = open and closed prompts" in captured.out and "figure: " in captured.out
    assert "During training (collapse index of the curve's test prompts):" in captured.out
    last = captured.out.strip().splitlines()[-1]
    assert re.fullmatch(r"total time: (\d+ min )?\d+ s \(expected: (\d+ min )?\d+ s\)", last), last
    report = json.loads((out / "report.json").read_text())
    demo = ExperimentConfig.from_yaml(CONFIGS / "demo.yaml")
    assert list(report["utilities"]) == demo.utilities and report["precision"] == "fp32"
    assert list(report["references"]) == ["untrained model", "reward = answer length", "exact optimum of each kind"]
    assert report["references"]["exact optimum of each kind"]["collapse_index"] == pytest.approx(1.0)
    for spec, result in report["utilities"].items():
        # Step 0 (the untrained reference's scoring), step 2 (measured in training), the end (the test scoring).
        assert [p["step"] for p in result["curve"]] == [0, 2, 4], spec
        assert {"collapse/index", "collapse/shape_index", "collapse/optimum_distance"} <= set(result["curve"][1])
        assert 0 < result["curve_seconds"] < result["training_seconds"]
        assert result["label_free"]["shape_index"] is not None
    starts = {json.dumps(r["curve"][0]["collapse/index"]) for r in report["utilities"].values()}
    assert len(starts) == 1  # every run starts from the same untrained model
    assert (out / "collapse_over_training.png").stat().st_size > 10_000
    assert report["curves_figure"] == str(out / "collapse_over_training.png")
    markdown = (out / "report.md").read_text()
    assert "| *untrained model* |" in markdown and "Collapse index during training" in markdown
    built = json.loads((out / "data" / "build_report.json").read_text())
    assert built["test_prompts"] == demo.test_prompts and built["length_scale"] == demo.length_scale
    assert built["train_prompts"] == 16
    assert demo.training["max_steps"] == 150 and demo.training["freeze_layers"] == 3
    full = demo.build()  # the demo's data design at its full size
    assert (len(full.train), len(full.test)) == (demo.train_prompts, demo.test_prompts)


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
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing set yet\n")
    cases.append((empty, "holds no settings; leave --config out for the paper's settings"))
    negative = tmp_path / "negative.yaml"
    negative.write_text("test_prompts: -3\n")
    cases.append((negative, "`test_prompts` must be a positive integer, got -3"))
    for path, message in cases:
        assert main(["reproduce", "--config", str(path), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


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


@pytest.mark.parametrize(("levels", "message"), [([0, 1.5], r"got \[1.5\]"), ([0, float("nan")], r"got \[nan\]")])
def test_openness_levels_outside_the_unit_interval_are_refused_by_name(levels, message):
    with pytest.raises(ValueError, match=r"`levels` must lie in \[0, 1\] \(0 closed, 1 open-ended\), " + message):
        build_longform("builtin", train_prompts=8, test_prompts=4, levels=levels)


def test_a_second_data_longform_into_a_folder_being_written_is_refused_in_one_line(tmp_path, capsys):
    source = longform_file(tmp_path / "lf.jsonl", invalid=0)
    out = tmp_path / "out"
    args = ["data", "longform", "--source", str(source), "--output", str(out), "--train-prompts", "8"]
    args += ["--test-prompts", "4"]
    script = f"""
        import sys
        import time
        import rewardcollapse.experiments.longform as longform
        def paused(path, text):  # the first run stops before its first file, holding the folder
            print("ready", flush=True)
            time.sleep(60)
        longform.write_text_atomic = paused
        from rewardcollapse.cli import main
        sys.argv = ["rewardcollapse", *{args!r}]  # as the console script sees it
        main()
    """
    first = run_until_ready(script, tmp_path)
    try:
        assert main(args) == 2
    finally:
        kill(first)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: `output_dir` {str(out)!r} is being written by another")
    assert f"(pid {first.pid} on " in err and "data longform --source" in err
    assert main(args) == 0  # the killed run's lock is taken over
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "build_report.json", "test.jsonl", "train.jsonl"]


def test_reproduce_into_a_folder_being_written_is_refused_before_any_work(tmp_path, tiny_dir, capsys):
    config = tiny_config(tmp_path, tiny_dir, test_prompts=4)
    out = tmp_path / "run"
    with locked_output_folder(out, "--output"):
        assert main(["reproduce", "--config", str(config), "--output", str(out)]) == 2
    assert f"is being written by another process (pid {os.getpid()} on " in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_diagnose_leaves_out_prompts_whose_answers_were_cut_to_the_same_tokens(tmp_path):
    targets = targets_for(8)
    rows = []
    for p in range(4):
        kind = "open" if p % 2 else "closed"
        row = {"prompt": f"p{p}", "responses": list("abcdefgh"), "openness": float(kind == "open")}
        rows.append({**row, "normalized_rewards": targets[kind].tolist(), "truncated": 0, "indistinguishable": False})
    cut = {**rows[1], "prompt": "cut", "normalized_rewards": [0.5] * 8, "truncated": 8, "indistinguishable": True}
    rewards = write_jsonl(tmp_path / "rewards.jsonl", [*rows, cut])
    # The cut prompt's equal rewards would read as collapse of an open prompt; left out, the index stays 1.
    with pytest.warns(UserWarning, match=r"1 of 5 prompts are flagged `indistinguishable` .* and left out"):
        result = diagnose_file(rewards)
    assert result.collapse_index == pytest.approx(1.0) and result.left_out == 1 and len(result.rows) == 4
    assert result.by_group["open"].prompts == 2 and sum(g.prompts for g in result.by_group.values()) == 4
    write_jsonl(rewards, [rows[0], rows[2], cut])  # the open group was only the cut prompt
    with pytest.raises(ValueError, match=r"only the group\(s\) \['closed'\] remain .* larger --max_length"):
        diagnose_file(rewards)
    write_jsonl(rewards, [cut])
    with pytest.raises(ValueError, match=r"every row is flagged `indistinguishable`.*larger --max_length"):
        diagnose_file(rewards)
    write_jsonl(rewards, [{**rows[0], "indistinguishable": "yes"}])
    with pytest.raises(ValueError, match="line 1: `indistinguishable` must be true or false"):
        diagnose_file(rewards)


def test_check_diagnosable_refuses_before_scoring_what_the_diagnosis_would():
    from rewardcollapse.experiments.diagnosis import check_diagnosable, check_levels

    rows = [{"prompt": f"p{o}", "responses": list("abcd"), "openness": o} for o in (0.0, 1.0)]
    check_diagnosable(rows, name="d")
    check_diagnosable(rows, [0, 1], name="d")
    assert check_levels(None) is None and check_levels([1, 0]) == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"d: row 1 has no `openness`, so it belongs to no group"):
        check_diagnosable([rows[0], {"prompt": "q", "responses": list("abcd")}], name="d")
    with pytest.raises(ValueError, match=r"`groups` must name at least two groups to compare, got \['closed'\]"):
        check_diagnosable(rows[:1], name="d")
    with pytest.raises(ValueError, match="the targets of the groups are all the same law"):
        check_diagnosable([{**row, "responses": list("abc")} for row in rows], name="d")  # 3 answers
    with pytest.raises(ValueError, match=r"each of `levels` \[0, nan\] must be a number in \[0, 1\]"):
        check_levels([0, float("nan")])


def billion_laughs(levels=9):
    """A YAML alias chain: each level lists the previous one 9 times, 9**levels strings when expanded."""
    text = "training:\n  lr_scheduler_kwargs:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for previous, name in zip("abcdefghi", "bcdefghij"[: levels - 1], strict=False):
        text += f"    {name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    return text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (billion_laughs(), r"bomb.yaml is refused at line 4, column 12: an alias \(\*a\)"),
        ("training:\n  lr_scheduler_kwargs: {x: " + "[" * 10_000 + "]" * 10_000 + "}\n", r"nested deeper than 32"),
        ("# a comment\n" * 10_000, r"is larger than 65536 bytes"),
        ("seed: 1\nutilities: &u [x, log]\nmore: *u\n", r"line 3, column 7: an alias \(\*u\)"),
    ],
    ids=["alias-bomb", "deep-nesting", "oversized", "plain-alias"],
)
def test_configuration_files_are_bounded_before_their_values_are_read(tmp_path, capsys, content, message):
    config = tmp_path / "bomb.yaml"
    config.write_text(content)
    started = time.perf_counter()
    assert main(["reproduce", "--config", str(config), "--output", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - started < 1
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("training:\n  report_to: wandb\n", "`training` must not set ['report_to']: the experiment sets them"),
        ("training:\n  logging_steps: 5\n", "`training` must not set ['logging_steps']"),
        ("training:\n  eval_strategy: steps\n", "`eval_strategy` 'steps' evaluates during training, but no evaluation"),
        ("seed: 4294967296\n", "`seed` must be an integer from 0 to 4294967295"),
        ("training:\n  max_steps: 2.0\n", "`max_steps` must be a whole number, got 2.0; write 2"),
        ("training:\n  max_steps: !!float 2\n", "`max_steps` must be a whole number, got 2.0; write 2"),
        ("training:\n  max_steps: true\n", "`max_steps` must be a whole number, got True; give one"),
        ("training:\n  learning_rate: true\n", "`learning_rate` must be a number, got True; give one"),
    ],
    ids=[
        "logger",
        "logging-steps",
        "evaluation",
        "seed",
        "float-steps",
        "tagged-float-steps",
        "flag-steps",
        "flag-rate",
    ],
)
def test_each_runs_training_settings_are_checked_before_work(tmp_path, capsys, content, message):
    config = tmp_path / "c.yaml"
    config.write_text(content)
    assert main(["reproduce", "--config", str(config), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_flat_training_keys_beside_a_training_mapping_are_refused_not_merged(tmp_path):
    config = tmp_path / "both.yaml"
    config.write_text("max_steps: 3\nsteps: 4\ntraining:\n  max_steps: 5\n")
    with pytest.raises(ValueError, match=r"unknown settings \['max_steps', 'steps'\]; training settings go under"):
        ExperimentConfig.from_yaml(config)
