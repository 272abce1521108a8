import numpy as np
import pytest
from scipy import stats

import rewardcollapse as rc
from rewardcollapse import closed_form_limit, ks_distance, limit_distribution, numerical_limit, optimal_rewards, utility


@pytest.mark.parametrize(
    ("spec", "shape"),
    [("x^0.5", 0.25), ("x^0.2", 0.4), ("log", 0.5), ("-x^-0.5", 0.75), ("-x^-0.2", 0.6)],
)
def test_closed_form_beta_shapes(spec, shape):
    law = limit_distribution(spec)
    assert law.args == pytest.approx((shape, shape))
    assert law.atoms == {}


def test_inverse_is_uniform_and_linear_is_two_point():
    uniform = limit_distribution("-1/x")
    assert uniform.cdf(0.3) == pytest.approx(0.3)
    two_point = limit_distribution("x")
    assert two_point.cdf(0.0) == 0.5 and two_point.cdf(0.999) == 0.5 and two_point.cdf(1.0) == 1.0
    assert two_point.atoms == {0.0: 0.5, 1.0: 0.5}


def test_no_closed_form_for_soft_utilities():
    assert closed_form_limit("logsigmoid") is None
    assert closed_form_limit(utility("log", eps=0.1)) is None
    with pytest.raises(ValueError, match="has no closed-form limit law"):
        limit_distribution("logsigmoid", method="closed-form")
    with pytest.raises(ValueError, match="`method` must be"):
        limit_distribution("log", method="exact")


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["log", "x^0.5"])
def test_numerical_path_matches_closed_forms(spec):
    numerical = limit_distribution(spec, method="numerical")
    grid = np.linspace(0, 1, 20001)
    assert np.max(np.abs(numerical.cdf(grid) - limit_distribution(spec).cdf(grid))) <= 1e-3
    assert numerical.sup_change < 1e-3


@pytest.mark.slow
def test_numerical_path_matches_inverse_power():
    grid = np.linspace(0, 1, 20001)
    numerical = limit_distribution("-x^-0.5", method="numerical")
    assert np.max(np.abs(numerical.cdf(grid) - limit_distribution("-x^-0.5").cdf(grid))) <= 1e-3


def test_logsigmoid_limit_has_atoms_and_a_working_distribution():
    law = limit_distribution("logsigmoid")
    m0, m1 = law.atoms[0.0], law.atoms[1.0]
    assert 0.3 < m0 < 0.45 and m0 == pytest.approx(m1, abs=2e-3)  # symmetric law
    assert law.cdf(0.0) == pytest.approx(m0)
    assert law.cdf(1.0) == 1.0 and law.cdf(1 - 1e-9) == pytest.approx(1 - m1, abs=1e-6)
    assert law.ppf(m0 / 2) == 0.0 and law.ppf(1 - m1 / 2) == 1.0
    assert 0.0 < law.ppf(0.5) < 1.0 and law.ppf(0.5) == pytest.approx(0.5, abs=1e-3)
    assert law.pdf(0.5) > 0
    samples = law.rvs(size=4000, random_state=np.random.default_rng(0))
    assert np.mean(samples == 0.0) == pytest.approx(m0, abs=0.03)
    assert law.mean() == pytest.approx(0.5, abs=1e-3)
    # The n = 1000 optimum is close to its own limit law.
    assert ks_distance(optimal_rewards(1000, "logsigmoid").rewards, law) < 0.01


def test_numerical_limit_arguments():
    with pytest.raises(ValueError, match="need n >= 10"):
        numerical_limit("logsigmoid", n=5)


def test_ks_distance_agrees_with_scipy_for_continuous_laws():
    rng = np.random.default_rng(1)
    sample = rng.beta(0.5, 0.5, size=300)
    law = stats.beta(0.5, 0.5)
    assert ks_distance(sample, law) == pytest.approx(stats.kstest(sample, law.cdf).statistic, abs=1e-12)
    with pytest.raises(ValueError, match="empty"):
        ks_distance(np.array([]), law)


def test_optimal_rewards_approach_their_limit():
    law = limit_distribution("log")
    distances = [ks_distance(optimal_rewards(n, "log").rewards, law) for n in (10, 100, 1000)]
    assert distances[0] > distances[1] > distances[2]
    assert distances[2] < 2e-3


def test_logsigmoid_limit_law_matches_its_pinned_cdf_ppf_pdf_and_moments():
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
