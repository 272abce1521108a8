import numpy as np
import pytest
from scipy import stats

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
