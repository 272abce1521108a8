r"""Exact optimal rewards of one prompt: the per-prompt problem of Song et al. (2023), Section 3.

For a ranking with ranked pairs :math:`E` (``(i, j)`` in :math:`E` when answer :math:`i` is ranked above :math:`j`)
the optimal rewards solve the convex problem

.. math::

    \max_{r \in [0, 1]^n} \; f(r) = \sum_{(i, j) \in E} U(r_i - r_j)
    \quad \text{subject to} \quad r_i \ge r_j \text{ for } (i, j) \in E,

the order constraint being the domain of :math:`U` (the paper's :math:`1 \ge r_1 \ge \dots \ge r_n \ge 0`).
Its Hessian is minus a graph Laplacian with edge weights :math:`-U''(r_i - r_j) \ge 0`, which every method below
exploits:

* **Barrier utilities** (:math:`U(0^+) = -\infty` or :math:`U'(0^+) = \infty`: log, -1/x, x^a, -x^-a): no ranked pair
  ties, top answers sit at 1 and bottom answers at 0, and the rest is an unconstrained concave maximisation solved by
  damped Newton from the limit law's quantiles (a near-optimal start), keeping the order strict.
* **Soft utilities** (finite :math:`U'(0)`: logsigmoid, any ``eps > 0``) on total orders and tiers: an active-set
  Newton method whose blocks are runs of tied answers; ties and the atoms at 0 and 1 are exact. It starts from the
  solution at a quarter of the size (coarse to fine), so few blocks change.
* **Soft utilities on partial orders (edges)**: a log-barrier path-following method; ties are resolved to about
  :math:`10^{-12}`.
* **U = x** is linear, so the optimum is a vertex (an up-set of the order gets 1, the rest 0). The objective is
  constant on a face when an answer's net count of ranked-below minus ranked-above is balanced, e.g. the middle
  answer of an odd total order; ties of the objective are broken by the midpoint of the smallest and the largest
  optimal up-sets, so the middle answer of an odd total order gets 1/2 and the answer is symmetric.

Accuracy is reported as the relative KKT residual

.. math::

    \rho = \max_k \left| \min\!\left(c_k,\ \lambda_k / S\right) \right|, \qquad
    S = \max_i \sum_j |\partial_{r_i} U(r_i - r_j)|,

over the constraints :math:`c_k \ge 0` with multipliers :math:`\lambda_k` (stationarity exact up to rounding), so
:math:`\rho = 0` exactly at an optimum; solvers stop at :math:`\rho \le` ``tol``.
"""

from __future__ import annotations

import graphlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
from scipy import linalg, optimize

from rewardcollapse.core.checks import check_positive_int
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.core.ranking import Ranking, parse_ranking
from rewardcollapse.core.utilities import Utility, utility

__all__ = ["OptimalRewards", "available_memory", "optimal_rewards", "solver_memory"]

_ROWS_PER_CHUNK = 256  # rows of the dense pair matrix evaluated at a time: keeps the work arrays near cache size
_COARSE_THRESHOLD = 64  # soft utilities on totals above this size start from the solution at a quarter of the size


@dataclass(frozen=True)
class OptimalRewards:
    r"""Result of :func:`optimal_rewards`, in the spirit of :class:`scipy.optimize.OptimizeResult`.

    Attributes
    ----------
    rewards : numpy.ndarray of shape (n,)
        Optimal reward of each answer, indexed like the ranking's answers.
    objective : float
        :math:`\sum_{(i,j) \in E} U(r_i - r_j)` at ``rewards``.
    iterations : int
        Newton (or simplex) iterations taken.
    residual : float
        Relative KKT residual (module docstring).
    success : bool
        Whether ``residual <= tol`` was reached.
    message : str
        How the solver ended.
    utility : str
        Name of the utility solved for.
    method : str
        ``"newton"``, ``"active-set"``, ``"barrier"`` or ``"linear"``.
    """

    rewards: np.ndarray = field(repr=False)
    objective: float
    iterations: int
    residual: float
    success: bool
    message: str
    utility: str
    method: str

    def __post_init__(self) -> None:
        self.rewards.setflags(write=False)


class _Terms(NamedTuple):
    value: float
    grad: np.ndarray  # df/dr, shape (n,)
    lap: np.ndarray | None  # minus the Hessian, a weighted graph Laplacian, shape (n, n)
    scale: float  # S: the largest gross gradient of one answer


class _Chain(NamedTuple):
    """Where the chain solver stopped: rewards ``v``, their complement ``w``, the terms there, and why."""

    v: np.ndarray
    w: np.ndarray
    terms: _Terms
    iterations: int
    residual: float
    stopped: str | None  # None: converged; else why it stopped early


class _Ascent(NamedTuple):
    r: np.ndarray
    terms: _Terms
    iterations: int
    converged: bool


class _Solved(NamedTuple):
    """A solver's answer before it becomes an :class:`OptimalRewards`."""

    rewards: np.ndarray
    objective: float
    iterations: int
    residual: float
    method: str
    stopped: str | None = None  # None: converged; else why it stopped early


class _Polished(NamedTuple):
    rewards: np.ndarray
    iterations: int
    residual: float


# --------------------------------------------------------------------------------------------------------------------
# Chains: tiers t = 0..T-1 with multiplicities m_t, every pair s < t ranked, pair weight m_s m_t.
# --------------------------------------------------------------------------------------------------------------------
def _chain_terms(u: Utility, v: np.ndarray, w: np.ndarray, m: np.ndarray, *, laplacian: bool = True) -> _Terms:
    """Objective, gradient and Laplacian of the tier chain, in row chunks of the dense pair matrix.

    ``v`` holds the rewards and ``w = 1 - v``, each accurate where it is small: differences inside the top half
    are taken from ``w`` and the others from ``v``, so gaps of 1e-15 near 1 (x^a with small a) keep their digits.
    """
    size = len(v)
    half = size // 2
    value = 0.0
    grad = np.zeros(size)
    gross = np.zeros(size)
    lap = np.zeros((size, size)) if laplacian else None
    diag = np.zeros(size)
    for s0 in range(0, size, _ROWS_PER_CHUNK):
        s1 = min(size, s0 + _ROWS_PER_CHUNK)
        b = s1 - s0
        x = np.empty((b, size - s0))  # rows s, columns t >= s0
        split = max(half - s0, 0)
        x[:, :split] = w[None, s0 : s0 + split] - w[s0:s1, None]
        x[:, split:] = v[s0:s1, None] - v[None, s0 + split :]
        weights = m[s0:s1, None] * m[None, s0:]
        lower = np.tril_indices(b)
        x[:, :b][lower] = 1.0  # pairs with t <= s are not ranked: a harmless point, zero weight
        weights[:, :b][lower] = 0.0
        value += float(np.sum(weights * u._nonnegative(x, 0)))
        d1 = weights * u._nonnegative(x, 1)
        rows, cols = d1.sum(axis=1), d1.sum(axis=0)
        grad[s0:s1] += rows
        grad[s0:] -= cols
        gross[s0:s1] += rows
        gross[s0:] += cols
        if laplacian:
            d2 = weights * u._nonnegative(x, 2)  # <= 0: minus the edge weights
            lap[s0:s1, s0:] += d2
            lap[s0:, s0:s1] += d2.T
            diag[s0:s1] -= d2.sum(axis=1)
            diag[s0:] -= d2.sum(axis=0)
    if laplacian:
        lap[np.diag_indices(size)] += diag
    return _Terms(value, grad, lap, float(gross.max()))


def _chain_gaps(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Constraint values c_0 = 1 - v_0, c_k = v_{k-1} - v_k, c_T = v_{T-1} (all >= 0 when feasible)."""
    half = len(v) // 2
    inner = v[:-1] - v[1:]
    inner[:half] = w[1 : half + 1] - w[:half]
    return np.concatenate([[w[0]], inner, [v[-1]]])


def _gradient_prefix(grad: np.ndarray) -> np.ndarray:
    """G_k = sum_{s<k} grad_s for k = 0..T: the chain multipliers are mu_k = mu_0 - G_k (mu_0: the ceiling's)."""
    return np.concatenate([[0.0], np.cumsum(grad)])


def _chain_residual(v: np.ndarray, w: np.ndarray, grad: np.ndarray, scale: float) -> float:
    """Relative KKT residual of a chain point, with the best ceiling multiplier mu_0 = max(0, max_k G_k)."""
    prefix = _gradient_prefix(grad)
    mu = max(0.0, float(prefix.max())) - prefix
    return float(np.max(np.abs(np.minimum(_chain_gaps(v, w), mu / scale))))


class _Partition:
    """Runs of tied tiers (blocks) read off the values; the first may be pinned at 1 and the last at 0."""

    def __init__(self, v: np.ndarray):
        self.size = len(v)
        self.starts = np.concatenate([[0], np.flatnonzero(v[1:] != v[:-1]) + 1])
        self.top = bool(v[0] == 1.0)
        self.bottom = bool(v[-1] == 0.0)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(np.append(self.starts, self.size))

    def free(self) -> np.ndarray:
        mask = np.ones(len(self.starts), dtype=bool)
        mask[0] &= not self.top
        mask[-1] &= not self.bottom
        return mask

    def active_gaps(self) -> np.ndarray:
        """Indices k of the chain constraints held with equality (see `_chain_gaps`)."""
        inner = np.setdiff1d(np.arange(1, self.size), self.starts)
        ends = ([0] if self.top else []) + ([self.size] if self.bottom else [])
        return np.union1d(inner, ends).astype(int)


def _accept_step(old: _Terms, new: _Terms, t: float, slope: float, old_grad, new_grad) -> bool:
    """Armijo on the objective, or, where rounding hides the gain near the optimum, a smaller gradient."""
    gained = new.value - old.value
    noise = 1e-14 * (abs(old.value) + 1.0)
    if gained >= 1e-4 * t * slope - noise:
        return True
    return gained >= -noise and np.max(np.abs(new_grad)) < np.max(np.abs(old_grad))


def _newton_direction(lap: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Solve lap @ d = grad for the ascent direction; lap is a positive (semi)definite reduced Laplacian."""
    try:
        factor = linalg.cho_factor(lap, overwrite_a=True, check_finite=False)
        return linalg.cho_solve(factor, grad, check_finite=False)
    except linalg.LinAlgError:
        # Singular only where U'' vanishes on all of a block's pairs (e.g. piecewise-linear callables).
        return linalg.lstsq(lap, grad, check_finite=False)[0]


def _solve_chain(u: Utility, m: np.ndarray, v: np.ndarray, w: np.ndarray, *, tol: float, max_iter: int) -> _Chain:
    """Active-set Newton on runs of tied tiers; with a barrier utility no run ever forms (strict order kept).

    ``v`` and ``w = 1 - v`` are updated together (see `_chain_terms`).
    """
    size = len(v)
    part = _Partition(v)
    terms = _chain_terms(u, v, w, m)
    barrier = u.is_barrier
    for iteration in range(1, max_iter + 1):
        residual = _chain_residual(v, w, terms.grad, terms.scale)
        if residual <= tol:
            return _Chain(v, w, terms, iteration - 1, residual, None)
        starts, free = part.starts, part.free()
        singletons = len(starts) == size

        def block_gradient(grad: np.ndarray, starts=starts, free=free, singletons=singletons) -> np.ndarray:
            return (grad if singletons else np.add.reduceat(grad, starts))[free]

        block_grad = block_gradient(terms.grad)
        # A tie is released only when its multiplier is negative beyond what the blocks' own unconverged
        # gradients could explain: the multipliers are prefix sums of the gradient.
        slack = 10 * float(np.abs(block_grad).sum()) + tol * terms.scale
        if not barrier and _release_constraint(part, terms.grad, slack):
            continue
        if not free.any():
            return _Chain(
                v, w, terms, iteration - 1, residual, "every reward is pinned but the KKT residual is above tol"
            )
        if singletons:
            block_lap = terms.lap[np.ix_(free, free)]
        else:
            block_lap = np.add.reduceat(np.add.reduceat(terms.lap, starts, axis=0), starts, axis=1)[np.ix_(free, free)]
        step_blocks = np.zeros(len(starts))
        step_blocks[free] = _newton_direction(block_lap, block_grad)
        step = np.repeat(step_blocks, part.sizes)
        boundaries = np.append(starts, size)
        gaps = _chain_gaps(v, w)[boundaries]
        dgaps = np.concatenate([[-step[0]], step[:-1] - step[1:], [step[-1]]])[boundaries]
        shrinking = dgaps < 0
        ratios = np.full(len(gaps), np.inf)
        ratios[shrinking] = gaps[shrinking] / -dgaps[shrinking]
        hit = int(np.argmin(ratios))
        t_max = float(ratios[hit])
        t = min(1.0, 0.99 * t_max) if barrier else min(1.0, t_max)
        merge = not barrier and t_max <= 1.0
        slope = float(terms.grad @ step)
        while True:
            trial_v, trial_w = v + t * step, w - t * step
            if merge:
                _close_gap(trial_v, trial_w, starts, hit)
            trial_terms = _chain_terms(u, trial_v, trial_w, m)
            if _accept_step(terms, trial_terms, t, slope, block_grad, block_gradient(trial_terms.grad)):
                break
            t *= 0.5
            merge = False
            if t < 1e-12:
                return _Chain(
                    v, w, terms, iteration, residual, "line search failed: no ascent along the Newton direction"
                )
        v, w, terms = trial_v, trial_w, trial_terms
        if merge:
            part = _Partition(v)
    residual = _chain_residual(v, w, terms.grad, terms.scale)
    return _Chain(v, w, terms, max_iter, residual, f"stopped after max_iter={max_iter} iterations")


def _close_gap(v: np.ndarray, w: np.ndarray, starts: np.ndarray, hit: int) -> None:
    """Make the tiers on both sides of block gap ``hit`` exactly equal (in place), as the active set demands."""
    size = len(v)
    if hit == 0:
        stop = starts[1] if len(starts) > 1 else size
        v[:stop], w[:stop] = 1.0, 0.0
    elif hit == len(starts):
        v[starts[-1] :], w[starts[-1] :] = 0.0, 1.0
    else:
        block = slice(starts[hit], starts[hit + 1] if hit + 1 < len(starts) else size)
        v[block], w[block] = v[starts[hit] - 1], w[starts[hit] - 1]


def _release_constraint(part: _Partition, grad: np.ndarray, slack: float) -> bool:
    """Split the block (or unpin the end) whose tie has the most negative multiplier; False if none is below -slack."""
    active = part.active_gaps()
    if len(active) == 0:
        return False
    prefix = _gradient_prefix(grad)
    inactive = np.setdiff1d(np.arange(part.size + 1), active)
    mu = (float(prefix[inactive[0]]) if part.top and len(inactive) else 0.0) - prefix
    worst = int(active[np.argmin(mu[active])])
    if mu[worst] >= -slack:
        return False
    if worst == 0:
        part.top = False
    elif worst == part.size:
        part.bottom = False
    else:
        part.starts = np.union1d(part.starts, [worst])
    return True


def _linear_chain(m: np.ndarray) -> np.ndarray:
    """U = x on a tier chain: the best prefix of tiers gets 1; ties of the objective give 1/2 (module docstring)."""
    below = m.sum() - np.cumsum(m)
    above = np.cumsum(m) - m
    coefficient = m * (below - above)  # d objective / d v_t, exact integers for integer multiplicities
    prefix = np.concatenate([[0.0], np.cumsum(coefficient)])
    best = np.flatnonzero(prefix == prefix.max())
    smallest, largest = best[0], best[-1]
    v = np.zeros(len(m))
    v[:smallest] = 1.0
    v[smallest:largest] = 0.5
    return v


def _chain_start(u: Utility, m: np.ndarray, *, tol: float, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """A near-optimal start (v, 1 - v): limit-law quantiles, or the coarse solution for soft utilities."""
    size = len(m)
    above = (np.cumsum(m) - m + (m - 1) / 2) / max(m.sum() - 1, 1)  # fraction of answers ranked above
    above = np.clip(above, 0.0, 1.0)
    if u.is_barrier:
        law = u.closed_form_limit()
        if law is not None:
            v, w = law.isf(above), law.ppf(above)  # each accurate where it is small
        else:
            v, w = 1.0 - above, above.copy()
        v[0], w[0], v[-1], w[-1] = 1.0, 0.0, 0.0, 1.0
        if np.all(np.diff(v) < 0) and np.all(np.diff(w) > 0):
            return v, w
        return np.linspace(1.0, 0.0, size), np.linspace(0.0, 1.0, size)
    if size > _COARSE_THRESHOLD and np.all(m == 1):
        small = m[: size // 4]
        coarse_v, coarse_w = _chain_start(u, small, tol=tol, max_iter=max_iter)
        coarse = _solve_chain(u, small, coarse_v, coarse_w, tol=tol, max_iter=max_iter)
        coarse_v, coarse_w = coarse.v, coarse.w
        grid, coarse_grid = np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, len(small))
        return np.interp(grid, coarse_grid, coarse_v), np.interp(grid, coarse_grid, coarse_w)
    v, w = 1.0 - above, above.copy()
    v[0], w[0], v[-1], w[-1] = 1.0, 0.0, 0.0, 1.0
    return v, w


# --------------------------------------------------------------------------------------------------------------------
# Partial orders given by edges.
# --------------------------------------------------------------------------------------------------------------------
def _graph_terms(u: Utility, r: np.ndarray, edges: np.ndarray) -> _Terms:
    n = len(r)
    i, j = edges[:, 0], edges[:, 1]
    x = r[i] - r[j]
    d1 = u.derivative(x)
    d2 = -u.second_derivative(x)  # >= 0: the Laplacian's edge weights
    grad = np.bincount(i, d1, n) - np.bincount(j, d1, n)
    gross = np.bincount(i, np.abs(d1), n) + np.bincount(j, np.abs(d1), n)
    lap = np.zeros((n, n))
    np.add.at(lap, (i, j), -d2)
    np.add.at(lap, (j, i), -d2)
    lap[np.diag_indices(n)] += np.bincount(i, d2, n) + np.bincount(j, d2, n)
    return _Terms(float(np.sum(u(x))), grad, lap, float(gross.max()))


def _levels(n: int, edges: np.ndarray) -> np.ndarray:
    """A strictly order-respecting start in [0, 1]: depth from the top over the length of the longest chain."""
    children: list[list[int]] = [[] for _ in range(n)]
    parents: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges.tolist():
        children[a].append(b)
        parents[b].append(a)
    order = list(graphlib.TopologicalSorter(dict(enumerate(parents))).static_order())
    depth = np.zeros(n)
    for a in order:
        for b in children[a]:
            depth[b] = max(depth[b], depth[a] + 1)
    height = np.zeros(n)
    for a in reversed(order):
        for b in children[a]:
            height[a] = max(height[a], height[b] + 1)
    total = depth + height
    return np.where(total > 0, 1.0 - depth / np.maximum(total, 1), 0.5)


def _ascend(
    evaluate: Callable[[np.ndarray], _Terms],
    r: np.ndarray,
    free: np.ndarray,
    max_step: Callable[[np.ndarray, np.ndarray], float],
    *,
    tol: float,
    max_iter: int,
    decrement: float = 0.0,
) -> _Ascent:
    """Damped Newton ascent on the free coordinates, staying strictly inside the feasible set.

    Stops when the gradient is below ``0.1 tol`` of the scale or the Newton decrement ``g . L^-1 g`` (the
    predicted gain of a full step, twice over) is at most ``decrement``.
    """
    terms = evaluate(r)
    for iteration in range(1, max_iter + 1):
        grad = terms.grad[free]
        if np.max(np.abs(grad), initial=0.0) <= 0.1 * tol * terms.scale:
            return _Ascent(r, terms, iteration - 1, True)
        step = np.zeros_like(r)
        step[free] = _newton_direction(terms.lap[np.ix_(free, free)].copy(), grad)
        slope = float(terms.grad @ step)
        if slope <= decrement:
            return _Ascent(r, terms, iteration - 1, True)
        t = min(1.0, 0.99 * max_step(r, step))
        while True:
            trial_terms = evaluate(r + t * step)
            if _accept_step(terms, trial_terms, t, slope, grad, trial_terms.grad[free]):
                break
            t *= 0.5
            if t < 1e-12:
                return _Ascent(r, terms, iteration, False)
        r, terms = r + t * step, trial_terms
    return _Ascent(r, terms, max_iter, False)


def _edge_step(edges: np.ndarray) -> Callable[[np.ndarray, np.ndarray], float]:
    def max_step(r: np.ndarray, step: np.ndarray) -> float:
        x = r[edges[:, 0]] - r[edges[:, 1]]
        dx = step[edges[:, 0]] - step[edges[:, 1]]
        shrinking = dx < 0
        return float(np.min(x[shrinking] / -dx[shrinking], initial=np.inf))

    return max_step


def _solve_graph_barrier_utility(u: Utility, ranking: Ranking, *, tol: float, max_iter: int) -> _Solved:
    """Barrier utilities: sources at 1, sinks at 0, Newton on the rest with every ranked pair kept apart."""
    n, edges = ranking.n, ranking.edges
    has_out = np.bincount(edges[:, 0], minlength=n) > 0
    has_in = np.bincount(edges[:, 1], minlength=n) > 0
    r = _levels(n, edges)
    r[has_out & ~has_in] = 1.0
    r[has_in & ~has_out] = 0.0
    free = has_in & has_out
    r, terms, iterations, _ = _ascend(
        lambda z: _graph_terms(u, z, edges), r, free, _edge_step(edges), tol=tol, max_iter=max_iter
    )
    scale = terms.scale
    # Multipliers: free answers need a zero gradient; sources' upper bounds need grad >= 0, sinks' lower grad <= 0.
    violation = np.concatenate(
        [
            np.abs(terms.grad[free]) / scale,
            np.maximum(0.0, -terms.grad[has_out & ~has_in]) / scale,
            np.maximum(0.0, terms.grad[has_in & ~has_out]) / scale,
        ]
    )
    return _Solved(r, terms.value, iterations, float(np.max(violation, initial=0.0)), "newton")


def _constraint_matrix(n: int, edges: np.ndarray, nodes: np.ndarray):
    """Rows of A with c = A r + b >= 0: r_i - r_j for edges, r_k and 1 - r_k for the ranked answers ``nodes``."""
    from scipy import sparse

    m, k = len(edges), len(nodes)
    rows = np.concatenate([np.arange(m), np.arange(m), m + np.arange(k), m + k + np.arange(k)])
    cols = np.concatenate([edges[:, 0], edges[:, 1], nodes, nodes])
    vals = np.concatenate([np.ones(m), -np.ones(m), np.ones(k), -np.ones(k)])
    a = sparse.csr_matrix((vals, (rows, cols)), shape=(m + 2 * k, n))
    b = np.concatenate([np.zeros(m + k), np.ones(k)])
    return a, b


def _solve_graph_soft(u: Utility, ranking: Ranking, *, tol: float, max_iter: int) -> _Solved:
    """Soft utilities on a partial order: log-barrier path following, barrier weight down to tol/100 of the scale."""
    n, edges = ranking.n, ranking.edges
    nodes = np.unique(edges)
    a, b = _constraint_matrix(n, edges, nodes)
    r = np.full(n, 0.5)
    r[nodes] = 0.05 + 0.9 * _levels(n, edges)[nodes]
    free = np.zeros(n, dtype=bool)
    free[nodes] = True
    scale = _graph_terms(u, r, edges).scale
    weight = 1e-2 * scale
    iterations = 0

    def barrier_terms(z: np.ndarray) -> _Terms:
        base = _graph_terms(u, z, edges)
        c = a @ z + b
        if np.any(c <= 0):
            return _Terms(-np.inf, base.grad, base.lap, base.scale)
        inv = 1.0 / c
        grad = base.grad + weight * (a.T @ inv)
        lap = base.lap + weight * (a.T @ a.multiply(inv[:, None] ** 2)).toarray()
        return _Terms(base.value + weight * float(np.sum(np.log(c))), grad, lap, base.scale)

    def max_step(z: np.ndarray, step: np.ndarray) -> float:
        c, dc = a @ z + b, a @ step
        shrinking = dc < 0
        return float(np.min(c[shrinking] / -dc[shrinking], initial=np.inf))

    while weight > 1e-10 * scale and iterations < max_iter:
        r, _, taken, _ = _ascend(
            barrier_terms, r, free, max_step, tol=tol, max_iter=max_iter - iterations, decrement=1e-3 * weight
        )
        iterations += taken
        weight *= 0.1
    # The barrier path only approaches ties; polish on the active set it identified to make them exact.
    polished = _polish_active_set(u, edges, nodes, a, b, r, tol=tol, max_iter=max(max_iter - iterations, 20))
    if polished is not None:
        r = polished.rewards
        return _Solved(
            r, _graph_terms(u, r, edges).value, iterations + polished.iterations, polished.residual, "barrier"
        )
    base = _graph_terms(u, r, edges)
    c = a @ r + b
    return _Solved(
        r, base.value, iterations, _graph_residual(base.grad, a, c, weight / c, nodes, base.scale), "barrier"
    )


def _graph_residual(grad: np.ndarray, a, c: np.ndarray, multipliers: np.ndarray, nodes, scale: float) -> float:
    """Relative KKT residual for c = A r + b >= 0: stationarity of the ranked answers and the min-map of (c, lambda)."""
    stationarity = np.abs(grad + a.T @ multipliers)[nodes] / scale
    complementarity = np.abs(np.minimum(c, multipliers / scale))
    return float(max(stationarity.max(initial=0.0), complementarity.max(initial=0.0)))


def _polish_active_set(u, edges, nodes, a, b, r, *, tol: float, max_iter: int) -> _Polished | None:
    """Tie the near-active constraints exactly, re-optimise the tied blocks by Newton, and certify by NNLS.

    Returns (rewards, iterations, residual) or None when the guessed active set is not optimal.
    """
    from scipy import sparse
    from scipy.sparse import csgraph

    n = len(r)
    c = a @ r + b
    active = c <= 1e-7
    m = len(edges)
    tied = edges[active[:m]]
    graph = sparse.coo_matrix((np.ones(len(tied)), (tied[:, 0], tied[:, 1])), shape=(n, n))
    count, label = csgraph.connected_components(graph, directed=False)
    k = len(nodes)
    at_zero = np.zeros(count, dtype=bool)
    at_one = np.zeros(count, dtype=bool)
    at_zero[label[nodes[active[m : m + k]]]] = True
    at_one[label[nodes[active[m + k :]]]] = True
    if np.any(at_zero & at_one):
        return None
    members = sparse.csr_matrix((np.ones(n), (np.arange(n), label)), shape=(n, count))
    sizes = np.asarray(members.sum(axis=0)).ravel()
    value = np.asarray(members.T @ r).ravel() / sizes
    value[at_one], value[at_zero] = 1.0, 0.0
    isolated = np.setdiff1d(np.arange(n), nodes)
    fixed = at_one | at_zero
    fixed[label[isolated]] = True
    inactive = ~active

    def block_terms(z: np.ndarray) -> _Terms:
        base = _graph_terms(u, members @ z, edges)
        return _Terms(base.value, members.T @ base.grad, (members.T @ base.lap @ members), base.scale)

    def max_step(z: np.ndarray, step: np.ndarray) -> float:
        cz, dc = (a @ (members @ z) + b)[inactive], (a @ (members @ step))[inactive]
        shrinking = dc < 0
        return float(np.min(cz[shrinking] / -dc[shrinking], initial=np.inf))

    value, _, iterations, _ = _ascend(block_terms, value, ~fixed, max_step, tol=tol, max_iter=max_iter)
    polished = members @ value
    c = a @ polished + b
    if np.any(c[inactive] <= 0):
        return None
    base = _graph_terms(u, polished, edges)
    rows = np.flatnonzero(active)
    multipliers = np.zeros(len(c))
    if len(rows):
        # Non-negative multipliers of the ties and pins that best balance the gradient: exact KKT certifies.
        multipliers[rows] = optimize.nnls(a[rows][:, nodes].T.toarray(), -base.grad[nodes])[0]
    residual = _graph_residual(base.grad, a, c, multipliers, nodes, base.scale)
    return _Polished(polished, iterations, residual) if residual <= tol else None


def _solve_graph_linear(ranking: Ranking) -> _Solved:
    """U = x on a partial order: two LPs find the smallest and largest optimal up-sets; their midpoint is returned."""
    n, edges = ranking.n, ranking.edges
    coefficient = np.bincount(edges[:, 0], minlength=n) - np.bincount(edges[:, 1], minlength=n)
    nodes = np.zeros(n, dtype=bool)
    nodes[np.unique(edges)] = True
    # r_j - r_i <= 0 for every edge (i, j). Integer data: a tilt of 1/(2n) per answer only breaks ties.
    upper = np.zeros((len(edges), n))
    upper[np.arange(len(edges)), edges[:, 1]] = 1.0
    upper[np.arange(len(edges)), edges[:, 0]] = -1.0
    solutions = []
    iterations = 0
    for tilt in (-1.0, 1.0):
        cost = -(coefficient + tilt * nodes / (2 * n))
        lp = optimize.linprog(
            cost, A_ub=upper, b_ub=np.zeros(len(edges)), bounds=(0, 1), method="highs-ds", options={"presolve": False}
        )
        if lp.status != 0:
            raise RuntimeError(f"the linear programme for U = x failed: {lp.message}")
        solutions.append(np.round(lp.x))
        iterations += int(lp.nit)
    r = np.where(nodes, (solutions[0] + solutions[1]) / 2, 0.5)
    best = max(float(coefficient @ s) for s in solutions)
    residual = abs(best - float(coefficient @ r)) / max(np.abs(coefficient).max(), 1)
    return _Solved(r, float(coefficient @ r), iterations, residual, "linear")


# --------------------------------------------------------------------------------------------------------------------
def optimal_rewards(
    ranking: int | Sequence | np.ndarray | Ranking,
    utility_spec: str | Utility = "log",
    *,
    tol: float = 1e-10,
    max_iter: int = 200,
) -> OptimalRewards:
    r"""Solve the per-prompt problem exactly: the rewards an infinitely expressive reward model converges to.

    Maximises :math:`\sum_{(i, j)} U(r_i - r_j)` over :math:`0 \le r \le 1` with the ranking's order (module
    docstring). The optimum does not depend on the prompt, which is reward collapse (Song et al., 2023, Sec. 3).

    Parameters
    ----------
    ranking : int, list of tiers, list of edges, or Ranking
        ``n`` (total order, answer 0 best), tiers such as ``[[0], [1, 2], [3]]`` (ties inside a tier), or edges
        such as ``[(0, 1), (0, 2)]`` (``i`` above ``j``; any DAG). See :func:`rewardcollapse.core.parse_ranking`.
    utility_spec : str or Utility, default "log"
        Any spec accepted by :func:`rewardcollapse.utility`.
    tol : float, default 1e-10
        Target relative KKT residual.
    max_iter : int, default 200
        Newton iterations allowed.

    Returns
    -------
    OptimalRewards
        Rewards indexed by answer, objective, iterations, residual, success flag and message. Non-convergence is
        reported there (``success=False``), not raised.

    Raises
    ------
    ValueError
        For a malformed or cyclic ranking, a bad utility spec, or ``tol``/``max_iter`` out of range.

    Examples
    --------
    >>> res = optimal_rewards(3, "log")
    >>> res.rewards.round(6).tolist(), res.success
    ([1.0, 0.5, 0.0], True)
    >>> optimal_rewards([[0], [1, 2], [3]], "x").rewards.tolist()
    [1.0, 0.5, 0.5, 0.0]
    """
    if not (isinstance(tol, int | float) and 0 < tol < 1):
        raise InputValueError(f"`tol` must be in (0, 1), got {tol!r}; the default 1e-10 is near machine precision")
    check_positive_int(max_iter, "max_iter")
    u = utility(utility_spec)
    if isinstance(ranking, int | np.integer) and not isinstance(ranking, bool) and ranking > 0:
        _check_memory(u, int(ranking))
    parsed = parse_ranking(ranking)
    _check_memory(u, parsed)
    solve = _solve_tiers if parsed.tiers is not None else _solve_edges
    solved = solve(u, parsed, tol=tol, max_iter=max_iter)
    success = bool(np.isfinite(solved.residual) and solved.residual <= tol)
    if solved.stopped is not None:
        message = solved.stopped
    else:
        message = "converged" if success else f"KKT residual {solved.residual:.2e} is above tol={tol:g}"
    return OptimalRewards(
        solved.rewards, solved.objective, solved.iterations, solved.residual, success, message, u.name, solved.method
    )


_BYTES_PER_SQUARED_SIZE = 28
_BYTES_FIXED = 16 * 2**20


def solver_memory(size: int) -> int:
    """Bytes the solver needs for a problem of ``size`` free variables (tiers of a chain, or answers of a graph).

    The Newton steps hold a few dense ``size x size`` float64 matrices (the Laplacian, its Cholesky factor, row
    chunks of the pair matrix): measured peaks of 35 MB at 1,000, 251 MB at 3,000 and 2.5 GB at 10,000 answers
    (``benchmarks/bench_solver.py``) are all below this estimate.
    """
    return _BYTES_PER_SQUARED_SIZE * size * size + _BYTES_FIXED


def available_memory() -> int | None:
    """Bytes of memory this machine can give a new allocation now (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_BYTES_PER_LISTED_ANSWER = 200  # a parsed total order: a one-answer tier tuple and its int per answer


def _solver_bytes(u: Utility, size: int, *, chain: bool) -> int:
    """Bytes of the solver's arrays for ``size`` free variables (tiers of a chain, or answers of a graph).

    Row chunks of the pair matrix for ``U = x`` on a chain (solved in closed form, objective in chunks); dense
    ``size x size`` matrices for the Newton solvers (:func:`solver_memory`).
    """
    if chain and u.is_linear:
        return 8 * 8 * _ROWS_PER_CHUNK * size + _BYTES_FIXED
    return solver_memory(size)


def _check_memory(u: Utility, ranking: Any) -> None:
    """Refuse, before allocating, a problem that would not fit in the memory available now.

    ``ranking`` is checked before it is parsed when it is a count ``n``: the total order of ``n`` one-answer tiers
    takes memory (and time) of its own, so its listing and the solver's arrays are both counted before either is
    built. A parsed ranking is checked for the solver's arrays.
    """
    if isinstance(ranking, Ranking):
        chain = ranking.tiers is not None
        size = len(ranking.tiers) if chain else ranking.n
        needed = _solver_bytes(u, size, chain=chain)
        what = "answers" if size == ranking.n else "tiers"
    else:
        size, what = ranking, "answers"
        needed = _BYTES_PER_LISTED_ANSWER * size + _solver_bytes(u, size, chain=True)
    available = available_memory()
    if available is None or needed <= available:
        return
    largest = math.isqrt(max(available - _BYTES_FIXED, 0) // _BYTES_PER_SQUARED_SIZE)
    raise InputValueError(
        f"`ranking`: {size} {what} need about {needed / 2**30:.1f} GiB for the solver, and this machine has "
        f"{available / 2**30:.1f} GiB available; the largest problem of a barrier or soft utility that fits now is "
        f"about {largest} answers (the limit law of a large n is `limit_distribution`)"
    )


def _solve_tiers(u: Utility, ranking: Ranking, *, tol: float, max_iter: int) -> _Solved:
    m = ranking.multiplicities
    if u.is_linear:
        v = _linear_chain(m)
        terms = _chain_terms(u, v, 1.0 - v, m, laplacian=False)
        chain = _Chain(v, 1.0 - v, terms, 0, _chain_residual(v, 1.0 - v, terms.grad, terms.scale), None)
        method = "linear"
    else:
        v, w = _chain_start(u, m, tol=tol, max_iter=max_iter)
        chain = _solve_chain(u, m, v, w, tol=tol, max_iter=max_iter)
        method = "newton" if u.is_barrier else "active-set"
    rewards = np.empty(ranking.n)
    for tier, value in zip(ranking.tiers, chain.v, strict=True):
        rewards[list(tier)] = value
    return _Solved(rewards, chain.terms.value, chain.iterations, chain.residual, method, chain.stopped)


def _solve_edges(u: Utility, ranking: Ranking, *, tol: float, max_iter: int) -> _Solved:
    if u.is_linear:
        return _solve_graph_linear(ranking)
    solve = _solve_graph_barrier_utility if u.is_barrier else _solve_graph_soft
    solved = solve(u, ranking, tol=tol, max_iter=max_iter)
    if math.isnan(solved.residual):
        return solved._replace(stopped="the objective became NaN; check the utility")
    if solved.iterations >= max_iter:
        return solved._replace(stopped=f"stopped after max_iter={max_iter} iterations")
    return solved
