"""``diagnose`` without openness labels: label-free measures, their verdicts and references, and its bad input."""

import json

import numpy as np
import pytest

from rewardcollapse.cli import main
from rewardcollapse.core import optimal_rewards
from rewardcollapse.diagnostics import (
    AT_COLLAPSE_POINT_AT_MOST,
    FAR_FROM_COLLAPSE_POINT_AT_LEAST,
    collapse_index,
    measure_ranked,
    optimum_verdict,
    targets_for,
)
from rewardcollapse.experiments.diagnosis import (
    COMPARED_UTILITIES,
    answer_lengths,
    check_diagnosable,
    diagnose_file,
    untrained_backbone,
)

from .conftest import write_jsonl

OPEN8, CLOSED8 = optimal_rewards(8, "-1/x").rewards, optimal_rewards(8, "x").rewards


def ranking(prompt, rewards, openness=None, field="rewards"):
    """A scored row of len(rewards) answers in rank order, the k-th answer k + 1 characters shorter than the first."""
    n = len(rewards)
    row = {"prompt": prompt, "responses": ["a" * (n - k) for k in range(n)], "ranks": list(range(n))}
    if openness is not None:
        row["openness"] = openness
    return {**row, field: [float(r) for r in rewards]}


def at_targets(prompts=10, openness=(None, None)):
    """Half the prompts at the open optimum (-1/x), half at the closed one (x), raw rewards, labels as given."""
    return [
        ranking(f"p{b}", (OPEN8, CLOSED8)[b % 2] * 3 - 1, openness[b % 2])  # any offset and scale: rescaled
        for b in range(prompts)
    ]


def test_an_unlabelled_file_gets_every_label_free_measure_and_its_references(tmp_path):
    rewards = write_jsonl(tmp_path / "r.jsonl", at_targets())
    result = diagnose_file(rewards)
    assert result.groups is None and result.targets is None and result.collapse_index is None and not result.by_group
    model = result.measured
    # Half the prompts at each optimum: the shape index's yardstick itself.
    assert model.shape_index == pytest.approx(1.0, abs=1e-12)
    assert list(model.distances) == list(COMPARED_UTILITIES)
    between = np.mean(np.abs(np.sort(OPEN8) - np.sort(CLOSED8)))  # W1 of the two optima, 0.202
    assert model.distances["x"] == pytest.approx(between / 2) and model.distances["-1/x"] == pytest.approx(between / 2)
    assert (
        "openness" in model.why_not["collapse_index"] and "rewardcollapse openness" in model.why_not["collapse_index"]
    )
    # Exact targets under the nearest collapse point: distance 0 by construction, one shape for every prompt.
    nearest = model.nearest
    exact = result.references["exact_targets"]
    assert nearest == min(model.distances, key=model.distances.__getitem__) == "log"  # between the two optima
    assert exact.distances[nearest] == 0 and exact.shape_index == pytest.approx(0.0)
    # Reward = answer length: lengths 8, 7, ..., 1 spread evenly, the same as measured directly.
    lengths = result.references["answer_length"]
    direct = measure_ranked(result.rows, [np.arange(8.0, 0, -1)] * 10, utility="-1/x")
    assert lengths.distances["-1/x"] == pytest.approx(direct.label_free.optimum_distance)
    assert lengths.measures.pairwise_accuracy == 1.0
    np.testing.assert_array_equal(answer_lengths(result.rows)[0], np.arange(8.0, 0, -1))
    saved = result.all_measures()
    assert saved["collapse_index"] is None and saved["groups"] == {} and saved["utility"] is None
    assert set(saved["references"]) == {"exact_targets", "answer_length"}
    assert saved["measures"]["nearest_collapse_point"] == nearest
    assert saved["measures"]["optimum_distance"]["x"]["verdict"] == optimum_verdict(between / 2)


def test_a_labelled_file_keeps_the_collapse_index_and_adds_the_label_free_measures(tmp_path):
    rows = at_targets(openness=(1.0, 0.0))
    normalised = [{**row, "normalized_rewards": [(r + 1) / 3 for r in row.pop("rewards")]} for row in rows]
    rewards = write_jsonl(tmp_path / "r.jsonl", normalised)
    result = diagnose_file(rewards, utility="prompt-aware")
    direct = collapse_index(result.rewards, result.groups, targets_for(8))
    assert result.collapse_index == direct == pytest.approx(1.0) and list(result.by_group) == ["open", "closed"]
    assert result.by_group["open"].wasserstein == pytest.approx(0.0, abs=1e-12)
    assert result.measured.distances == {"prompt-aware": pytest.approx(0.0, abs=1e-12)}
    # The exact prompt-aware targets: collapse index 1 and distance 0 by construction.
    exact = result.references["exact_targets"]
    assert exact.collapse_index == pytest.approx(1.0) and exact.distances["prompt-aware"] == 0
    assert list(result.to_dict()) == ["collapse_index", "groups"]  # as reproduce's report.json has it
    saved = result.all_measures()
    assert saved["collapse_index"] == result.collapse_index and set(saved["groups"]) == {"open", "closed"}
    assert saved["measures"]["verdict"] == "separated"


def test_a_mixed_file_gets_the_label_free_measures_and_says_how_many_rows_lack_openness(tmp_path, capsys):
    rows = at_targets(openness=(1.0, 0.0))
    for row in rows[6:]:
        del row["openness"]
    rewards = write_jsonl(tmp_path / "r.jsonl", rows)
    result = diagnose_file(rewards)
    assert result.collapse_index is None and result.groups is None and result.measured.shape_index is not None
    output = tmp_path / "d"
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "- collapse index: 4 of 10 rows have no `openness`: label them, or estimate it with `rewardcollapse " in (
        printed
    )
    assert "| shape index | 1.000 | separated |" in printed and "with openness labels" not in printed
    saved = json.loads((output / "diagnostics.json").read_text())
    assert "4 of 10 rows" in saved["measures"]["why_not"]["collapse_index"]
    assert (output / "rewards.png").stat().st_size > 0


def test_prompts_of_fewer_than_four_answers_are_left_out_and_counted(tmp_path, capsys):
    rows = at_targets(prompts=6) + [ranking(f"q{b}", [0.9, 0.5, 0.1]) for b in range(3)]
    rewards = write_jsonl(tmp_path / "r.jsonl", rows)
    free = diagnose_file(rewards).measured.measures.label_free
    assert (free.prompts, free.left_out_few_answers) == (6, 3)
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d")]) == 0
    assert "9 prompts (6 measured, left out: 3 with fewer than 4 answers)" in capsys.readouterr().out
    # Too few measurable prompts for the shape index: the distances still come, the reason in one line.
    write_jsonl(rewards, rows[:2] + rows[6:])
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d2")]) == 0
    printed = capsys.readouterr().out
    assert "- shape index: needs at least 4 prompts to split in halves, got 2" in printed
    assert "| distance to x's collapse point | 0.101 |" in printed
    # Nothing to measure: one line naming the file and the fix, nothing written.
    write_jsonl(rewards, rows[6:])
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d3")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{rewards}: no collapse measure can be given: " in err
    assert "3 have fewer than 4 answers" in err and "give prompts with at least 4 ranked answers" in err
    assert "openness" not in err  # labels would not help
    assert not (tmp_path / "d3").exists()


def test_prompts_whose_rewards_are_all_tied_are_left_out_and_a_file_of_them_is_refused(tmp_path, capsys):
    tied = [ranking(f"t{b}", [0.5] * 8) for b in range(3)]
    rewards = write_jsonl(tmp_path / "r.jsonl", at_targets(prompts=6) + tied)
    free = diagnose_file(rewards).measured.measures.label_free
    assert (free.prompts, free.left_out_equal_rewards) == (6, 3)
    write_jsonl(rewards, tied)
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "of 3 prompts, 3 have all rewards equal" in err and "tells them apart" in err
    # A ranking of ties only ranks nothing: the row check names the line.
    write_jsonl(rewards, [{**tied[0], "ranks": [0] * 8}])
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d")]) == 2
    assert "line 1: all 8 responses have rank 0, so the row has no ranked pair" in capsys.readouterr().err


def test_raw_rewards_are_checked_as_normalised_ones_are_without_the_unit_interval(tmp_path, capsys):
    rewards = write_jsonl(tmp_path / "r.jsonl", [ranking("p", [3.0, float("nan"), 1.0, 0.0])])
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d")]) == 2
    assert "line 1: `rewards` must be 4 finite numbers (one per response)" in capsys.readouterr().err
    write_jsonl(rewards, [ranking("p", [3.0, 2.0, 1.0, 0.0], field="normalized_rewards")])
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(tmp_path / "d")]) == 2
    assert "`normalized_rewards` must be 4 finite numbers in [0, 1]" in capsys.readouterr().err


def test_utility_option_measures_one_collapse_point(tmp_path, capsys):
    rewards = write_jsonl(tmp_path / "r.jsonl", at_targets())
    output = tmp_path / "d"
    assert main(["diagnose", "--rewards", str(rewards), "--utility=-1/x", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "utility -1/x (--utility)" in printed and "| distance to -1/x's collapse point | 0.101 |" in printed
    assert "x's collapse point" not in printed.replace("-1/x's", "") and "nearest collapse point" not in printed
    assert "| measure | value | verdict | exact targets (-1/x) | answer length |" in printed
    saved = json.loads((output / "diagnostics.json").read_text())
    assert saved["utility"] == "-1/x" and list(saved["measures"]["optimum_distance"]) == ["-1/x"]
    # A per-prompt utility without openness: no collapse point, said in one line; the shape index stays.
    assert main(["diagnose", "--rewards", str(rewards), "--utility", "openness", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "- distance to openness's collapse point: the utility 'openness' needs each row's openness" in printed
    assert "| shape index | 1.000 | separated |" in printed
    assert main(["diagnose", "--rewards", str(rewards), "--utility", "x^abc", "--output", str(output)]) == 2
    assert "`--utility` must be a utility spec ('x', 'log', '-1/x', 'logsigmoid', ...)" in capsys.readouterr().err


def test_a_model_trained_here_gives_the_utility_and_the_untrained_reference(tmp_path, tiny_dir, capsys):
    rows = [
        {**row, "prompt": f"Question {b}: say something.", "responses": [f"answer {k} " * (8 - k) for k in range(8)]}
        for b, row in enumerate(at_targets(prompts=8))
    ]
    rewards = write_jsonl(tmp_path / "r.jsonl", rows)
    model = tmp_path / "model"
    model.mkdir()
    (model / "training_summary.json").write_text(json.dumps({"utility": "x", "backbone": str(tiny_dir)}))
    output = tmp_path / "d"
    args = ["diagnose", "--rewards", str(rewards), "--model", str(model), "--output", str(output)]
    assert main([*args, "--max-length", "64"]) == 0
    printed = capsys.readouterr().out
    assert f"utility x (recorded in {model / 'training_summary.json'})" in printed
    assert "| measure | value | verdict | exact targets (x) | answer length | untrained model |" in printed
    saved = json.loads((output / "diagnostics.json").read_text())
    untrained = saved["references"]["untrained_model"]
    assert str(tiny_dir) in untrained["source"] and "seed 0" in untrained["source"]
    # The same rows scored by the tiny model itself, measured directly.
    scored = [json.loads(line) for line in (output / "untrained_rewards.jsonl").read_text().splitlines()]
    direct = measure_ranked(rows, [row["normalized_rewards"] for row in scored], utility="x")
    assert untrained["optimum_distance"]["x"]["distance"] == pytest.approx(direct.label_free.optimum_distance)
    assert untrained["shape_index"] == pytest.approx(direct.label_free.shape_index)
    # Skipped on request; and without a model, the line says how to get it.
    assert main([*args, "--untrained-model", "none"]) == 0
    assert "- untrained model: not computed (--untrained_model none)" in capsys.readouterr().out
    assert main(["diagnose", "--rewards", str(rewards), "--output", str(output)]) == 0
    assert "- untrained model: not computed: the model the rewards came from is not known; give --untrained_model" in (
        capsys.readouterr().out
    )


def test_the_untrained_backbone_comes_from_the_summary_or_the_adapters_base(tmp_path):
    assert untrained_backbone(None, untrained_model="m") == ("m", "--untrained_model")
    assert untrained_backbone(None)[0] is None
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    assert untrained_backbone(adapters)[0] == "org/base"
    assert untrained_backbone(adapters, base_model="moved/base") == ("moved/base", "--base_model")
    other = tmp_path / "other"
    other.mkdir()
    name, why = untrained_backbone(other)
    assert name is None and "records no backbone" in why and "--untrained_model" in why


def test_rows_are_checked_before_scoring_without_requiring_openness():
    rows = [{"prompt": f"p{b}", "responses": list("abcd")} for b in range(2)]
    check_diagnosable(rows, name="d", require_openness=False)
    with pytest.raises(ValueError, match=r"d: every row has fewer than 4 answers, so no collapse measure"):
        check_diagnosable([{**row, "responses": list("abc")} for row in rows], name="d", require_openness=False)
    labelled = [{**row, "openness": 0.0} for row in rows]
    with pytest.raises(ValueError, match=r"d: row 0 has openness 0.0, which is none of the levels \[0.5, 1.0\]"):
        check_diagnosable(labelled, [0.5, 1], name="d", require_openness=False)


def test_distance_verdicts_follow_their_thresholds():
    assert optimum_verdict(AT_COLLAPSE_POINT_AT_MOST) == "at its collapse point"
    assert optimum_verdict(FAR_FROM_COLLAPSE_POINT_AT_LEAST) == "far from its collapse point"
    assert optimum_verdict((AT_COLLAPSE_POINT_AT_MOST + FAR_FROM_COLLAPSE_POINT_AT_LEAST) / 2) == (
        "near its collapse point"
    )
    # The far threshold is the distance between the open and closed optima of 8 answers, to 0.01.
    assert np.mean(np.abs(np.sort(OPEN8) - np.sort(CLOSED8))) == pytest.approx(
        FAR_FROM_COLLAPSE_POINT_AT_LEAST, abs=0.01
    )


def test_the_figure_without_labels_draws_the_halves_against_the_collapse_point():
    from rewardcollapse.experiments.diagnosis import shape_halves
    from rewardcollapse.plots import plot_group_rewards

    rewards = [OPEN8, CLOSED8] * 3
    halves = shape_halves(rewards)
    assert halves == ["less polarised half", "more polarised half"] * 3  # x's optimum: every reward at 0 or 1
    _, ax = plot_group_rewards(rewards, halves, reference=("collapse point of x", CLOSED8))
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["less polarised half", "more polarised half", "collapse point of x"]


def test_diagnose_scores_unlabelled_data_first_and_refuses_data_with_nothing_to_measure(tmp_path, tiny_dir, capsys):
    rows = [
        {"prompt": f"Question {b}: say something.", "responses": [f"answer {k} " * (6 - k) for k in range(6)]}
        for b in range(6)
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    output = tmp_path / "d"
    base = ["diagnose", "--model", str(tiny_dir), "--max-length", "64", "--untrained-model", "none"]
    assert main([*base, "--data", str(data), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert (
        "label-free (no openness needed)" in printed and "- collapse index: 6 of 6 rows have no `openness`" in printed
    )
    assert len((output / "rewards.jsonl").read_text().splitlines()) == 6
    write_jsonl(data, [{**row, "responses": row["responses"][:3]} for row in rows])
    assert main([*base, "--data", str(data), "--output", str(tmp_path / "d2")]) == 2
    assert "every row has fewer than 4 answers, so no collapse measure can be given" in capsys.readouterr().err
    assert not (tmp_path / "d2").exists()  # refused before the model was loaded
