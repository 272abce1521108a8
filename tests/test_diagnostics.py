"""Collapse metrics (rewardcollapse.diagnostics): collapse index, W1 and KS distances, group summaries, label-free."""

import numpy as np
import pytest
from scipy import stats

from rewardcollapse.core import optimal_rewards
from rewardcollapse.diagnostics import (
    collapse_index,
    group_diagnostics,
    label_free_measures,
    level_label,
    measure_ranked,
    optimum_distances,
    polarisation,
    quantile_function,
    rescale_per_prompt,
    targets_for,
    wasserstein_1,
)
from rewardcollapse.plots import plot_group_rewards


def test_collapse_index_on_constructed_rewards():
    targets = {"open": np.linspace(0, 1, 8), "closed": np.repeat([0.0, 1.0], 4)}
    groups = ["open", "closed"] * 10
    collapsed = [np.linspace(0, 1, 8)] * 20
    separated = [np.linspace(0, 1, 8), np.repeat([0.0, 1.0], 4)] * 10
    assert collapse_index(collapsed, groups, targets) == 0.0
    assert collapse_index(separated, groups, targets) == 1.0
    # Halfway: closed prompts half the way from uniform to polarised.
    halfway = [np.linspace(0, 1, 8), 0.5 * np.linspace(0, 1, 8) + 0.5 * np.repeat([0.0, 1.0], 4)] * 10
    assert collapse_index(halfway, groups, targets) == pytest.approx(0.5)
    # Rescaling removes offset and scale: 0.4 + 0.1 * r collapses to r.
    shrunk = [0.4 + 0.1 * r for r in separated]
    assert collapse_index(shrunk, groups, targets) == 1.0
    assert collapse_index(shrunk, groups, targets, rescale=False) == pytest.approx(0.1)
    # Laws as targets: Uniform(0, 1) against the two-point law, W1 = 1/4.
    laws = {"open": stats.uniform(), "closed": stats.bernoulli(0.5)}
    assert wasserstein_1(laws["open"], laws["closed"]) == pytest.approx(0.25, abs=1e-3)


def test_collapse_index_errors():
    targets = {"open": np.linspace(0, 1, 8), "closed": np.repeat([0.0, 1.0], 4)}
    with pytest.raises(ValueError, match="at least two groups"):
        collapse_index([np.arange(3.0)], ["open"], targets)
    with pytest.raises(ValueError, match=r"no law for groups \['mid'\]"):
        collapse_index([np.arange(3.0)] * 2, ["open", "mid"], targets)
    with pytest.raises(ValueError, match="all the same law"):
        collapse_index([np.arange(3.0)] * 2, ["a", "b"], {"a": [0, 1], "b": [0, 1]})
    with pytest.raises(ValueError, match="has 2 prompts but `groups` has 1"):
        collapse_index([np.arange(3.0)] * 2, ["a"], targets)


def test_wasserstein_matches_scipy_and_rescale():
    rng = np.random.default_rng(0)
    a, b = rng.random(400), rng.random(250) ** 2
    assert wasserstein_1(a, b) == pytest.approx(stats.wasserstein_distance(a, b), abs=1e-3)
    assert [r.tolist() for r in rescale_per_prompt([[2.0, 4.0, 3.0], [1.0, 1.0]])] == [[0.0, 1.0, 0.5], [0.5, 0.5]]


def test_group_diagnostics_and_plot():
    targets = targets_for(8)
    rewards = [targets["open"], targets["closed"]] * 3
    pairs = [np.triu(np.ones((8, 8), dtype=bool), 1)] * 6
    result = group_diagnostics(rewards, ["open", "closed"] * 3, targets, pairs)
    assert result["open"]["ks"] == 0.0 and result["open"]["wasserstein"] == 0.0
    assert result["closed"]["prompts"] == 3
    # The closed target ties four answers at 1 and four at 0, so half its within-cluster pairs are ties.
    assert result["open"]["pairwise_accuracy"] == 1.0 and result["open"]["kendall_tau"] == 1.0
    _, ax = plot_group_rewards(rewards, ["open", "closed"] * 3, targets)
    assert len(ax.patches) > 0


def test_wasserstein_of_samples_is_scipys_and_the_mean_quantile_gap():
    rng = np.random.default_rng(1)
    for size_a, size_b in ((8, 8), (400, 200), (16, 2000), (1000, 500)):  # sizes dividing 2000: the old grid was exact
        a, b = rng.random(size_a), rng.random(size_b)
        grid = float(np.mean(np.abs(quantile_function(a) - quantile_function(b))))
        assert wasserstein_1(a, b) == pytest.approx(grid, abs=1e-12)
    a, b = rng.random(3), rng.random(7)
    assert wasserstein_1(a, b) == stats.wasserstein_distance(a, b)
    law = stats.beta(0.5, 0.5)
    assert wasserstein_1(law, law) == 0.0 and wasserstein_1(law, [0.5]) == pytest.approx(1 / np.pi, abs=1e-3)


# Label-free measures: constructed cases with known answers.
OPEN8 = optimal_rewards(8, "-1/x").rewards
CLOSED8 = optimal_rewards(8, "x").rewards


def test_label_free_measures_at_collapse_and_at_the_targets():
    rng = np.random.default_rng(3)
    one_shape = [OPEN8] * 60
    m = label_free_measures(one_shape, one_shape)
    assert m.shape_spread == 0 and m.shape_spread_if_collapsed == 0 and m.shape_index == 0
    assert m.optimum_distance == 0 and m.verdict == "collapsed" and m.prompts == 60
    # Any increasing affine map per prompt (offset and scale) leaves every measure unchanged.
    moved = [3.0 * r - 1.0 + rng.normal() for r in one_shape]
    assert label_free_measures(moved, one_shape).shape_index == 0
    # The exact targets of prompt-aware training, half open and half closed: 1 by construction.
    apart = [OPEN8, CLOSED8] * 30
    m = label_free_measures(apart, apart)
    assert m.shape_index == pytest.approx(1.0, abs=1e-12) and m.verdict == "separated"
    assert m.shape_spread == pytest.approx(wasserstein_1(OPEN8, CLOSED8), abs=1e-12)
    assert m.optimum_distance == 0
    # Against the wrong optimum (every prompt's collapse point under x): the open prompts are W1 away.
    assert label_free_measures(apart, [CLOSED8] * 60).optimum_distance == pytest.approx(
        wasserstein_1(OPEN8, CLOSED8) / 2, abs=1e-12
    )


def test_label_free_measures_see_through_noise():
    rng = np.random.default_rng(0)
    noisy_one = [OPEN8 + rng.normal(0, 0.05, 8) for _ in range(200)]
    noisy_two = [(OPEN8 if b % 2 else CLOSED8) + rng.normal(0, 0.05, 8) for b in range(200)]
    one, two = label_free_measures(noisy_one), label_free_measures(noisy_two)
    assert one.shape_spread > 0.01  # noise alone spreads the shapes ...
    assert abs(one.shape_index) < 0.1 and one.verdict == "collapsed"  # ... and the index discounts it
    assert two.shape_index > 0.6 and two.verdict == "separated"  # noise blurs the two shapes a little
    # A quarter of the prompts closed: on the way, as the docstring says (fewer of one kind give less).
    mixed = [(CLOSED8 if b % 4 == 0 else OPEN8) + rng.normal(0, 0.05, 8) for b in range(200)]
    assert one.shape_index < label_free_measures(mixed).shape_index < two.shape_index


def test_label_free_measures_on_answer_lengths():
    # A reward that is the answer's length, on cuts at evenly spaced lengths: the -1/x optimum's near-even shape
    # for every prompt, so one shape (collapsed) and near -1/x's collapse point, far from x's.
    rng = np.random.default_rng(1)
    lengths = [np.sort(rng.integers(5, 400, size=8)).astype(float) for _ in range(100)]
    m_open = label_free_measures(lengths, [OPEN8] * 100)
    m_closed = label_free_measures(lengths, [CLOSED8] * 100)
    assert m_open.verdict == "collapsed"
    assert m_open.optimum_distance < 0.1 < 0.15 < m_closed.optimum_distance


def test_label_free_measures_leave_out_what_they_cannot_measure():
    few, equal = [0.1, 0.9, 0.5], [0.3] * 8
    m = label_free_measures([OPEN8, CLOSED8] * 3 + [few, equal])
    assert (m.prompts, m.left_out_few_answers, m.left_out_equal_rewards) == (6, 1, 1)
    assert m.optimum_distance is None and "training utility" in m.why_not["optimum_distance"]
    m = label_free_measures([OPEN8, CLOSED8, few])
    assert m.shape_index is None and "at least 4 prompts" in m.why_not["shape_index"]
    m = label_free_measures([few, equal], [[0, 0.5, 1], [0, 1] * 4])
    assert m.prompts == 0 and m.verdict is None
    assert m.why_not["shape_spread"] == (
        "no prompt to measure: of 2 prompts, 1 have fewer than 4 answers and 1 have all rewards equal"
    )
    with pytest.raises(ValueError, match="`optima` has 1"):
        label_free_measures([OPEN8, CLOSED8], [OPEN8])
    with pytest.raises(ValueError, match="prompt 0: 8 rewards but an optimum of 4"):
        optimum_distances([OPEN8], [[0, 0, 1, 1]])


@pytest.mark.parametrize("n", [4, 5, 64])
def test_label_free_measures_at_other_sizes(n):
    # The yardstick follows the median number of answers: the targets read 1 at every n, mixed sizes too.
    open_n, closed_n = optimal_rewards(n, "-1/x").rewards, optimal_rewards(n, "x").rewards
    assert label_free_measures([open_n, closed_n] * 10).shape_index == pytest.approx(1.0, abs=1e-12)
    mixed = [open_n, closed_n] * 10 + [OPEN8, CLOSED8] * 2
    assert 0.7 < label_free_measures(mixed).shape_index < 1.4  # mixed sizes: near, not at, 1
    # x's optimum: every answer at 0 or 1, and with an odd n the middle one at 1/2.
    assert polarisation([closed_n])[0] == pytest.approx(1.0 if n % 2 == 0 else 1 - 1 / n)


def _rows(openness):
    return [
        {"prompt": f"p{b}", "responses": [f"a{k}" for k in range(8)], "ranks": list(range(8)), "openness": o}
        for b, o in enumerate(openness)
    ]


def test_measure_ranked_with_and_without_labels():
    openness = [1.0, 0.0] * 10
    rows = _rows(openness)
    at_targets = [OPEN8 if o else CLOSED8 for o in openness]
    m = measure_ranked(rows, at_targets, utility="prompt-aware")
    assert m.collapse_index == pytest.approx(1.0) and m.verdict == "separated"
    assert m.label_free.optimum_distance == pytest.approx(0.0, abs=1e-12)
    assert m.label_free.shape_index == pytest.approx(1.0, abs=1e-12)
    assert m.pairwise_accuracy == pytest.approx((28 + 22 / 28 * 28) / 56)  # x's optimum ties within its clusters
    metrics = m.metrics()
    assert set(metrics) == {
        "collapse/index",
        "collapse/shape_index",
        "collapse/shape_spread",
        "collapse/shape_spread_if_collapsed",
        "collapse/optimum_distance",
        "collapse/pairwise_accuracy",
        "collapse/wasserstein_open",
        "collapse/wasserstein_closed",
    }
    assert metrics["collapse/wasserstein_open"] == pytest.approx(0.0, abs=1e-12)
    # Without openness: the label-free measures stay, the index says why it is missing, and a per-prompt utility
    # has no collapse point to measure against.
    unlabelled = [{**row, "openness": None} for row in rows]
    m = measure_ranked(unlabelled, at_targets, utility="prompt-aware")
    assert m.collapse_index is None and "20 of 20 rows have no `openness`" in m.why_not["collapse_index"]
    assert "rewardcollapse openness" in m.why_not["collapse_index"]
    assert (
        m.label_free.optimum_distance is None
        and "needs each row's openness" in m.to_dict()["why_not"]["optimum_distance"]
    )
    assert m.label_free.shape_index == pytest.approx(1.0, abs=1e-12)
    assert "collapse/index" not in m.metrics() and "collapse/shape_index" in m.metrics()
    # A fixed utility needs no labels for its collapse point: every prompt's is x's optimum.
    m = measure_ranked(unlabelled, [CLOSED8] * 20, utility="x")
    assert m.label_free.optimum_distance == 0 and m.label_free.verdict == "collapsed"
    with pytest.raises(ValueError, match="`rows` has 20 rows but `rewards` has 1"):
        measure_ranked(rows, [OPEN8])


def test_measure_ranked_on_levels_and_ties():
    levels = [0.0, 0.5, 1.0]
    rows = _rows([0.0, 0.5, 1.0] * 4)
    rewards = [targets_for(8, levels)[level_label(row["openness"])] for row in rows]
    m = measure_ranked(rows, rewards, utility="openness", levels=levels)
    assert m.collapse_index == pytest.approx(1.0) and list(m.groups) == ["o=0", "o=0.5", "o=1"]
    assert m.label_free.optimum_distance == pytest.approx(0.0, abs=1e-9)
    off_level = measure_ranked(_rows([0.3] * 4), [OPEN8] * 4, levels=levels)
    assert (
        off_level.collapse_index is None
        and "openness 0.3, at none of the levels" in off_level.why_not["collapse_index"]
    )
    # Rankings of ties only: no ranked pair, so no accuracy; the optimum of a tie is any constant (no shape).
    tied = [{**row, "ranks": [0] * 8} for row in _rows([1.0, 0.0] * 4)]
    m = measure_ranked(tied, [OPEN8, CLOSED8] * 4, utility="x")
    assert np.isnan(m.pairwise_accuracy) and m.label_free.shape_index == pytest.approx(1.0, abs=1e-12)
