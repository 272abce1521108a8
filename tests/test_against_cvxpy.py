"""Independent reference: CVXPY's conic solver on the same convex problem at small n."""

import cvxpy as cp
import numpy as np
import pytest

from rewardcollapse import optimal_rewards


def cvxpy_rewards(n, spec, edges):
    r = cp.Variable(n)
    i = np.array([e[0] for e in edges])
    j = np.array([e[1] for e in edges])
    x = r[i] - r[j]
    objective = {
        "log": lambda: cp.sum(cp.log(x)),
        "-1/x": lambda: -cp.sum(cp.inv_pos(x)),
        "x^0.5": lambda: cp.sum(cp.power(x, 0.5)),
        "-x^-0.5": lambda: -cp.sum(cp.power(x, -0.5)),
        "logsigmoid": lambda: -cp.sum(cp.logistic(-x)),
        "x": lambda: cp.sum(x),
    }[spec]()
    problem = cp.Problem(cp.Maximize(objective), [r >= 0, r <= 1, x >= 0])
    problem.solve(solver="CLARABEL")
    return r.value, problem.value


RANKINGS = {
    "total-6": (6, [(i, j) for i in range(6) for j in range(i + 1, 6)]),
    "total-11": (11, [(i, j) for i in range(11) for j in range(i + 1, 11)]),
    "dag": (5, [(0, 1), (0, 2), (1, 3), (2, 3), (3, 4), (1, 4)]),
    "forest": (6, [(0, 1), (0, 2), (3, 4), (3, 5), (1, 5)]),
}


@pytest.mark.parametrize("spec", ["log", "-1/x", "x^0.5", "-x^-0.5", "logsigmoid", "x"])
@pytest.mark.parametrize("name", list(RANKINGS))
def test_matches_cvxpy(spec, name):
    n, edges = RANKINGS[name]
    ranking = n if name.startswith("total") else [tuple(e) for e in edges]
    ours = optimal_rewards(ranking, spec)
    reference, value = cvxpy_rewards(n, spec, edges)
    assert ours.success, ours.message
    # Our optimum is at least as good as the conic solver's (whose accuracy is about 1e-8 in the objective).
    assert ours.objective >= value - 1e-6 * max(1.0, abs(value))
    if spec != "x":  # U = x has a face of optima; CVXPY returns some point of it
        np.testing.assert_allclose(ours.rewards, reference, atol=2e-4)
