"""Collapse metrics (rewardcollapse.diagnostics): the collapse index, Wasserstein and KS distances, group summaries."""

import numpy as np
import pytest
from scipy import stats

from rewardcollapse.diagnostics import (
    collapse_index,
    group_diagnostics,
    quantile_function,
    rescale_per_prompt,
    wasserstein_1,
)
from rewardcollapse.experiments import targets_for
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
