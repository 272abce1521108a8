import numpy as np
import pytest
from scipy import stats

import rewardcollapse as rc
from rewardcollapse.core.inverse import BASIS_OPENNESS, _quantiles
from rewardcollapse.core.openness import openness_mixture


@pytest.mark.parametrize(
    ("target", "name"),
    [
        (0.3, "x^0.4"),
        (0.0, "x"),
        (stats.bernoulli(0.5), "x"),
        (stats.beta(0.5, 0.5), "log"),
        (stats.beta(0.8, 0.8), "-x^-0.6"),
        (stats.uniform(), "-1/x"),
        (1.0, "-1/x"),
    ],
)
def test_symmetric_beta_targets_are_exact(target, name):
    design = rc.utility_for(target)
    assert design.utility.name == name
    assert design.exact and design.reachable
    # Verified by the forward solver at n = 1000 (the -1/x optimum approaches the uniform law only slowly).
    assert design.ks <= 0.02
    assert design.n == 1000


@pytest.mark.parametrize(
    ("target", "reason", "nearest_name"),
    [
        (stats.beta(3, 3), "more concentrated in the middle than the uniform law", "-1/x"),
        (2.0, "more concentrated in the middle than the uniform law", "-1/x"),
        (stats.beta(0.5, 2.0), "not symmetric about 1/2", None),
        (stats.uniform(0.2, 0.6), "does not reach 0 and 1", None),
    ],
)
def test_unreachable_targets_get_the_nearest_reachable_law(target, reason, nearest_name):
    design = rc.utility_for(target)
    assert not design.reachable and not design.exact
    assert reason in design.message and "returned the nearest reachable law" in design.message
    if nearest_name:
        assert design.utility.name == nearest_name
    alpha = design.nearest.args[0]
    assert 0 < alpha <= 1 and design.nearest.args == (alpha, alpha)
    assert design.ks <= 0.02  # the returned utility does reach the nearest law


def test_bad_targets():
    with pytest.raises(ValueError, match="must be >= 0"):
        rc.utility_for(-0.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        rc.utility_for(np.array([0.0, 0.5, 1.5]))
    with pytest.raises(ValueError, match="at least 2 finite rewards"):
        rc.utility_for(np.array([0.5, np.nan]))


@pytest.mark.slow
def test_numerical_design_recovers_a_combination():
    # A target no symmetric Beta law fits (KS 0.107 to the best one): the n = 400 optimum of 0.9 x + 0.1 log,
    # written in the Box-Cox basis. The design must reach KS <= 0.02 at n = 400 and find the weights. The sizes keep
    # the defaults' ratio n_fit / n = 1/5 at 2/5 of their size (each of the fit's ~500 solves costs ~n_fit^2).
    weights = np.array([0.9, 0.0, 0.1, 0.0, 0.0])
    target = rc.optimal_rewards(400, openness_mixture(weights, BASIS_OPENNESS)).rewards
    alpha = rc.fit_beta_shape(_quantiles(target))
    assert stats.kstest(target, stats.beta(alpha, alpha).cdf).statistic > 0.1
    design = rc.utility_for(target, n=400, n_fit=80)
    assert design.n == 400
    assert design.reachable and not design.exact
    assert design.ks <= 0.02
    assert design.weights[0.0] == pytest.approx(0.9, abs=0.05) and design.weights[0.5] == pytest.approx(0.1, abs=0.05)
