import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import optimize

import rewardcollapse as rc
from rewardcollapse import optimal_rewards, parse_ranking, utility

from .conftest import BUILTIN_SPECS, SMOOTH_SPECS


def symmetric_reference(n, spec):
    """n = 4 or 5 by symmetry r = (1, 1 - t, [1/2,] t, 0): a scalar root of the derivative, found by brentq."""
    u = utility(spec)

    def rewards(t):
        middle = [0.5] if n == 5 else []
        return np.array([1.0, 1.0 - t, *middle, t, 0.0])

    def slope(t):
        r = rewards(t)
        total = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                # d(r_i - r_j)/dt for the parametrisation above
                dr = np.array([0.0, -1.0, *([0.0] if n == 5 else []), 1.0, 0.0])
                total += float(u.derivative(r[i] - r[j])) * (dr[i] - dr[j])
        return total

    t = optimize.brentq(slope, 1e-9, 0.5 - 1e-9, xtol=1e-15)
    return rewards(t)


@pytest.mark.parametrize("spec", ["log", "-1/x", "x^0.5", "-x^-0.5", "x^0.2", "-x^-0.1"])
@pytest.mark.parametrize("n", [4, 5])
def test_small_n_against_symmetric_scalar_root(spec, n):
    result = optimal_rewards(n, spec)
    assert result.success, result.message
    np.testing.assert_allclose(result.rewards, symmetric_reference(n, spec), atol=1e-9)


def test_log_n4_closed_form():
    # 1/t - 1/(1-t) - 1/(1-2t) = 0  <=>  5 t^2 - 5 t + 1 = 0
    t = (5 - np.sqrt(5)) / 10
    np.testing.assert_allclose(optimal_rewards(4, "log").rewards, [1, 1 - t, t, 0], atol=1e-12)


@pytest.mark.parametrize("spec", BUILTIN_SPECS)
def test_n2_and_n3(spec):
    np.testing.assert_allclose(optimal_rewards(2, spec).rewards, [1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(optimal_rewards(3, spec).rewards, [1.0, 0.5, 0.0], atol=1e-12)


@pytest.mark.parametrize("n", [2, 3, 6, 7, 100, 1001])
def test_linear_utility_is_the_two_point_law(n):
    result = optimal_rewards(n, "x")
    expected = np.zeros(n)
    expected[: n // 2] = 1.0
    if n % 2:
        expected[n // 2] = 0.5  # the balanced middle answer: the tie-break gives 1/2
    np.testing.assert_array_equal(result.rewards, expected)
    assert result.residual == 0.0 and result.method == "linear"
    assert result.objective == pytest.approx(sum(expected[i] - expected[j] for i in range(n) for j in range(i + 1, n)))


def test_linear_utility_on_tiers_and_edges():
    assert optimal_rewards([[0], [1, 2], [3]], "x").rewards.tolist() == [1.0, 0.5, 0.5, 0.0]
    # 0 > 1, 0 > 2, 1 > 3: counts below-minus-above are 2, 0, -1, -1; the best up-sets are {0} and {0, 1}.
    result = optimal_rewards([(0, 1), (0, 2), (1, 3)], "x")
    assert result.rewards.tolist() == [1.0, 0.5, 0.0, 0.0]
    assert result.success


@pytest.mark.parametrize("spec", SMOOTH_SPECS)
@pytest.mark.parametrize("n", [10, 200, 1000])
def test_total_orders_converge_to_tol(spec, n):
    result = optimal_rewards(n, spec)
    assert result.success, result.message
    assert result.residual <= 1e-10
    r = result.rewards
    assert r[0] == 1.0 and r[-1] == 0.0
    assert np.all(np.diff(r) <= 0)
    np.testing.assert_allclose(r, 1.0 - r[::-1], atol=1e-9)  # symmetric problem, unique optimum


def test_logsigmoid_has_exact_atoms_at_zero_and_one():
    r = optimal_rewards(300, "logsigmoid").rewards
    top, bottom = int(np.sum(r == 1.0)), int(np.sum(r == 0.0))
    assert top > 5 and top == bottom
    assert np.all((r[top:-bottom] < 1) & (r[top:-bottom] > 0))


def test_barrier_utilities_keep_pairs_strictly_apart():
    r = optimal_rewards(500, "x^0.5").rewards
    assert np.all(np.diff(r) < 0)  # gaps near the ends are ~1e-11, kept exactly by the (v, 1 - v) representation


def test_tiers_equal_the_expanded_partial_order():
    tiers = [[0], [1, 2], [3], [4, 5, 6]]
    edges = [(i, j) for a in range(4) for b in range(a + 1, 4) for i in tiers[a] for j in tiers[b]]
    for spec in SMOOTH_SPECS:
        by_tiers, by_edges = optimal_rewards(tiers, spec), optimal_rewards(edges, spec)
        assert by_tiers.success and by_edges.success
        np.testing.assert_allclose(by_tiers.rewards, by_edges.rewards, atol=1e-8)
        assert by_tiers.objective == pytest.approx(by_edges.objective, rel=1e-10)


def test_total_order_as_all_pairs_equals_int():
    edges = [(i, j) for i in range(8) for j in range(i + 1, 8)]
    for spec in SMOOTH_SPECS:
        np.testing.assert_allclose(optimal_rewards(edges, spec).rewards, optimal_rewards(8, spec).rewards, atol=1e-9)


def test_partial_order_with_isolated_answer_and_soft_ties():
    result = optimal_rewards([(0, 1), (2, 3), (0, 3), (5, 4)], "logsigmoid")
    assert result.success
    assert result.rewards[6 - 1 - 1] == 0.0  # answer 4 is a sink: 0
    # disconnected pieces each get the extremes; the isolated answer... none here, all are ranked
    np.testing.assert_array_equal(result.rewards[[0, 2, 5]], [1.0, 1.0, 1.0])


def test_isolated_answer_gets_one_half():
    result = optimal_rewards([(0, 2)], "log")
    assert result.rewards.tolist() == [1.0, 0.5, 0.0]


def test_eps_utilities_are_solved_exactly():
    for spec in ("log", "-1/x", "x^0.5"):
        result = optimal_rewards(60, utility(spec, eps=0.1))
        assert result.success and result.method == "active-set", result.message


def test_callable_utility_matches_builtin():
    custom = utility(np.log, derivative=lambda x: 1 / x, second_derivative=lambda x: -1 / x**2, name="mylog")
    assert custom.is_barrier
    np.testing.assert_allclose(optimal_rewards(30, custom).rewards, optimal_rewards(30, "log").rewards, atol=1e-10)


def test_non_convergence_is_reported_not_raised():
    result = optimal_rewards(200, "x^0.5", max_iter=1)
    assert not result.success
    assert "max_iter=1" in result.message


def test_result_is_frozen():
    result = optimal_rewards(5)
    with pytest.raises(AttributeError):
        result.objective = 0.0
    with pytest.raises(ValueError):
        result.rewards[0] = 2.0


@st.composite
def partial_orders(draw):
    n = draw(st.integers(2, 8))
    order = draw(st.permutations(range(n)))
    pairs = [(order[a], order[b]) for a in range(n) for b in range(a + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), min_size=1, max_size=len(pairs), unique=True))
    return chosen


@settings(max_examples=40, deadline=None)
@given(partial_orders(), st.sampled_from([*SMOOTH_SPECS, "x"]))
def test_any_partial_order_is_solved_feasibly(edges, spec):
    result = optimal_rewards(edges, spec)
    r = result.rewards
    assert result.success, (edges, spec, result)
    assert np.all(np.isfinite(r)) and np.all((r >= 0) & (r <= 1))
    for i, j in edges:
        assert r[i] >= r[j] - 1e-12


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=2, max_size=6), st.sampled_from(SMOOTH_SPECS))
def test_symmetric_tiers_give_symmetric_rewards(sizes, spec):
    sizes = sizes + sizes[::-1]  # a palindrome of tier sizes is symmetric under r -> 1 - r reversed
    tiers, start = [], 0
    for size in sizes:
        tiers.append(list(range(start, start + size)))
        start += size
    result = optimal_rewards(tiers, spec)
    assert result.success
    r = result.rewards
    np.testing.assert_allclose(r, 1.0 - r[::-1], atol=1e-9)
    assert np.all(np.diff(r) <= 1e-15)


@pytest.mark.parametrize(
    ("ranking", "error", "match"),
    [
        (1, ValueError, "at least 2 answers"),
        (True, TypeError, "got bool"),
        ("abc", TypeError, "must be an int, a list of tiers or a list of edges"),
        ([], ValueError, "`ranking` is empty"),
        ([[0]], ValueError, "at least 2 tiers"),
        ([[0], []], ValueError, "tier 1 is empty"),
        ([[0], [0, 1]], ValueError, "answer 0 appears in tier 0 and tier 1"),
        ([[0], [2]], ValueError, "cover answers 0..1 exactly once; missing"),
        ([[0], [1.5]], TypeError, "must be an int answer index"),
        ([[0], [-1]], ValueError, "non-negative"),
        ([[0], "ab"], TypeError, "got a mix"),
        ([(0, 1), (1, 2), (2, 0)], ValueError, r"has a cycle (\d > ){3}\d; a ranking must be acyclic"),
        ([(1, 1)], ValueError, "ranks answer 1 above itself"),
        ([(0, 1), (0, 1)], ValueError, r"edge \(0, 1\) more than once"),
        ([(0, 1, 2)], ValueError, "must be a pair"),
        (np.zeros((2, 3), dtype=int), ValueError, r"\(m, 2\) integer array"),
        ([[0], (1,)], TypeError, "got a mix"),
    ],
)
def test_bad_rankings(ranking, error, match):
    with pytest.raises(error, match=match):
        optimal_rewards(ranking)


def test_bad_solver_arguments():
    with pytest.raises(ValueError, match="`tol` must be in"):
        optimal_rewards(3, tol=0)
    with pytest.raises(ValueError, match="`max_iter` must be a positive int"):
        optimal_rewards(3, max_iter=0)
    with pytest.raises(ValueError, match="unknown utility spec"):
        optimal_rewards(3, "nope")


def test_parse_ranking_forms():
    assert parse_ranking(4).num_pairs == 6
    assert parse_ranking([[0], [1, 2], [3]]).num_pairs == 5
    assert parse_ranking(np.array([[0, 1], [1, 2]])).num_pairs == 2


@pytest.mark.slow
def test_a_total_order_of_5000_answers_converges_under_log():
    # n large: 5,000 answers (about 7 s, five dense Cholesky factorisations); benchmarks/bench_solver.py times
    # 10,000 (48 s), which kept the suite's slowest worker busy for a minute.
    result = optimal_rewards(5_000, "log")
    assert result.success and result.residual <= 1e-10


def test_a_cycle_is_refused_by_name_and_a_dag_gets_a_feasible_start():
    with pytest.raises(ValueError, match=r"has a cycle 0 > 1 > 2 > 0; a ranking must be acyclic"):
        rc.optimal_rewards([(0, 1), (1, 2), (2, 0)], "log")
    with pytest.raises(ValueError, match=r"has a cycle 1 > 2 > 3 > 1"):
        rc.parse_ranking([(0, 1), (1, 2), (2, 3), (3, 1)])
    # Topological levels (graphlib's static order) still give a feasible start on a DAG.
    result = rc.optimal_rewards([(0, 1), (0, 2), (1, 3), (2, 3), (4, 3)], "log")
    assert result.success and result.rewards[0] == 1.0 and result.rewards[3] == 0.0
