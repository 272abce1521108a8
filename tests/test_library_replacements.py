"""Library code where it does the job: each replacement keeps the figures of the hand-written code it replaced."""

import numpy as np
import pytest
from scipy import stats

import rewardcollapse as rc
from rewardcollapse.diagnostics import quantile_function, wasserstein_1


def test_tabulated_limit_law_on_rv_histogram_keeps_the_old_figures():
    law = rc.limit_distribution("logsigmoid")
    assert law.atoms == pytest.approx({0.0: 0.3835, 1.0: 0.3835}, abs=1e-12)
    # Values of the former hand-written rv_continuous (same tabulated CDF), pinned.
    old_cdf = [0.3835, 0.40612891341635277, 0.4409280878929836, 0.49999999999999967, 0.5590719121070163,
               0.5938710865836481, 1.0]  # fmt: skip
    np.testing.assert_allclose(law.cdf([0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]), old_cdf, rtol=0, atol=1e-12)
    old_ppf = [0.02925608630498185, 0.5000000000000014, 0.9707439136950142]
    np.testing.assert_allclose(law.ppf([0.39, 0.5, 0.61]), old_ppf, rtol=0, atol=1e-12)
    np.testing.assert_allclose(law.pdf([0.2, 0.5]), [0.23288140285639525, 0.2373317162331636], rtol=1e-12)
    assert law.ppf(0.2) == 0.0 and law.ppf(0.9) == 1.0 and law.cdf(-0.1) == 0.0
    # The moments are now the histogram's exact ones (the old ones came from a 20,000-level quantile sum).
    assert float(law.mean()) == pytest.approx(0.5, abs=1e-12)
    assert float(law.var()) == pytest.approx(0.21085886822623795, abs=1e-8)
    sample = law.rvs(20000, random_state=1)
    assert np.mean(sample == 0.0) == pytest.approx(0.3835, abs=0.01) and np.all((sample >= 0) & (sample <= 1))


def test_one_ks_distance_for_laws_with_atoms_and_for_samples():
    rewards = np.array([0.0] * 4 + [1.0] * 4)
    assert rc.ks_distance(rewards, rc.limit_distribution("x")) == 0.0  # scipy's kstest says 0.5 here
    assert stats.kstest(rewards, rc.limit_distribution("x").cdf).statistic == 0.5
    rng = np.random.default_rng(0)
    a, b = rng.random(37), np.round(rng.random(50), 1)  # ties in b
    assert rc.ks_distance(a, b) == stats.ks_2samp(a, b).statistic
    # utility_for's designs report a true KS distance (before: |mean - 1/2| under that name at alpha = 0).
    assert rc.utility_for(0.3).ks == pytest.approx(0.0010000000000000009, abs=1e-12)
    assert rc.utility_for(0.0).ks == 0.0
    assert rc.utility_for(1.0).ks == pytest.approx(0.013092030370480123, abs=1e-12)


def test_wasserstein_of_samples_is_scipys_and_keeps_the_grid_figures():
    rng = np.random.default_rng(1)
    for size_a, size_b in ((8, 8), (400, 200), (16, 2000), (1000, 500)):  # sizes dividing 2000: the old grid was exact
        a, b = rng.random(size_a), rng.random(size_b)
        grid = float(np.mean(np.abs(quantile_function(a) - quantile_function(b))))
        assert wasserstein_1(a, b) == pytest.approx(grid, abs=1e-12)
    a, b = rng.random(3), rng.random(7)
    assert wasserstein_1(a, b) == stats.wasserstein_distance(a, b)
    law = stats.beta(0.5, 0.5)
    assert wasserstein_1(law, law) == 0.0 and wasserstein_1(law, [0.5]) == pytest.approx(1 / np.pi, abs=1e-3)


def test_cycles_come_from_graphlib_with_the_cycle_named():
    with pytest.raises(ValueError, match=r"has a cycle 0 > 1 > 2 > 0; a ranking must be acyclic"):
        rc.optimal_rewards([(0, 1), (1, 2), (2, 0)], "log")
    with pytest.raises(ValueError, match=r"has a cycle 1 > 2 > 3 > 1"):
        rc.parse_ranking([(0, 1), (1, 2), (2, 3), (3, 1)])
    # Topological levels (graphlib's static order) still give a feasible start on a DAG.
    result = rc.optimal_rewards([(0, 1), (0, 2), (1, 3), (2, 3), (4, 3)], "log")
    assert result.success and result.rewards[0] == 1.0 and result.rewards[3] == 0.0
