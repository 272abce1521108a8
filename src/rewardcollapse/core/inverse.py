r"""The inverse problem: a utility whose optimal rewards follow a target distribution.

**What can be reached.** For ``n`` totally ordered answers the problem
:math:`\max \sum_{i<j} U(r_i - r_j)` over :math:`1 \ge r_1 \ge \dots \ge r_n \ge 0` is unchanged by
:math:`r \mapsto 1 - r` with the order reversed, and it is strictly concave for the utilities here, so its optimum
is symmetric: :math:`r_{n+1-i} = 1 - r_i`. Three conditions on a target law follow or are observed:

1. it must be **symmetric about 1/2** (the symmetry above);
2. its support must **reach 0 and 1**: the best answer always gets 1 and the worst 0 (U is increasing, so pushing
   the extremes outwards never lowers the objective);
3. it must be **at least as spread as the uniform law**. Every answer is pulled up by those below it and down by
   those above; with :math:`U'` decreasing, the balance :math:`\int_{y>x} U'(y-x)\,dQ(y) = \int_{y<x} U'(x-y)\,dQ(y)`
   holds for the uniform law only in the limit of the most local interaction (:math:`-1/x`, Beta(1, 1)), and for
   the families known in closed form the limit laws are Beta(alpha, alpha) with alpha <= 1. A target more peaked
   in the middle (Beta(alpha, alpha) with alpha > 1, a bell) is not reached by any utility we know of. This third
   condition is a **heuristic**, checked through the best-fitting symmetric Beta shape (alpha <= 1).

**How a utility is found.** A symmetric Beta(alpha, alpha) target with 0 <= alpha <= 1 (or a shape ``alpha``) is
exact: the openness family's member :func:`~rewardcollapse.core.openness.openness_utility` (alpha). Any other target
(a frozen law or a sample) gets a numerical design: a positive combination of the Box-Cox basis
:math:`U = \sum_k w_k U_{o_k}` over openness levels :math:`o_k \in \{0.25, 0.5, 0.75, 1\}` plus a small weight on 0,
its weights fitted by Nelder-Mead to the 1-Wasserstein distance between the optimum of ``n_fit`` answers and the
target, then **verified** by the forward solver at ``n`` answers: the KS distance is in the result. An unreachable
target gets no silent bad fit: the result says which condition fails and gives the nearest reachable law
(the best symmetric Beta with alpha <= 1) with its exact utility.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

from rewardcollapse.core.errors import InputValueError
from rewardcollapse.core.limits import ks_distance
from rewardcollapse.core.openness import (
    QUANTILE_LEVELS,
    fit_beta_shape,
    openness_law,
    openness_mixture,
    openness_utility,
)
from rewardcollapse.core.utilities import Utility

__all__ = ["BASIS_OPENNESS", "UtilityDesign", "utility_for"]

BASIS_OPENNESS = (0.0, 0.25, 0.5, 0.75, 1.0)
"""Openness levels of the Box-Cox basis of numerical designs."""


@dataclass(frozen=True)
class UtilityDesign:
    """The utility found for a target distribution, and how well its optimum matches.

    Attributes
    ----------
    utility : Utility
        The utility (for an unreachable target: the exact utility of the nearest reachable law).
    ks : float
        KS distance between the optimal rewards of ``n`` answers under ``utility`` and the law they aim at (the
        target, or the nearest reachable law).
    n : int
        Answers of the verification.
    reachable : bool
        Whether the target meets the three conditions of the module docstring.
    exact : bool
        True for symmetric Beta targets (closed form); False for numerical designs.
    nearest : frozen scipy.stats law
        The best-fitting reachable symmetric Beta law (the target itself when it is one).
    weights : Mapping[float, float]
        Basis openness -> weight (normalised to sum 1) of a numerical design; for an exact design, the one level.
    message : str
        What was done, or which condition failed and what was returned instead.
    """

    utility: Utility
    ks: float
    n: int
    reachable: bool
    exact: bool
    nearest: Any
    weights: Any = field(default_factory=dict)
    message: str = ""


def _quantiles(target: Any) -> np.ndarray:
    if hasattr(target, "ppf"):
        return np.asarray(target.ppf(QUANTILE_LEVELS), dtype=float)
    sample = np.asarray(target, dtype=float).ravel()
    if sample.size < 2 or not np.all(np.isfinite(sample)):
        raise InputValueError("a target sample needs at least 2 finite rewards")
    if sample.min() < 0 or sample.max() > 1:
        raise InputValueError(
            f"target rewards must lie in [0, 1], got values in [{sample.min():.3g}, {sample.max():.3g}]"
        )
    return np.quantile(sample, QUANTILE_LEVELS, method="inverted_cdf")


def _beta_shape(target: Any) -> float | None:
    """Alpha of a target that is exactly a symmetric Beta (a number, or a frozen beta/uniform/two-point law)."""
    if isinstance(target, int | float) and not isinstance(target, bool):
        if not target >= 0:
            raise InputValueError(f"a Beta shape `target` must be >= 0, got {target}")
        return float(target)
    dist = getattr(target, "dist", None)
    name = getattr(dist, "name", None)
    args = tuple(getattr(target, "args", ())) + tuple(getattr(target, "kwds", {}).values())
    if name == "beta" and len(args) == 2 and args[0] == args[1]:
        return float(args[0])
    if name == "uniform" and args in ((), (0.0, 1.0), (0, 1)):
        return 1.0
    if name == "bernoulli" and args == (0.5,):
        return 0.0
    return None


def _optimum(u: Utility, n: int) -> np.ndarray:
    from rewardcollapse.core.solver import optimal_rewards

    return optimal_rewards(n, u).rewards


def _exact(alpha: float, n: int) -> tuple[Utility, Any, float]:
    """The family's utility for Beta(alpha, alpha), its law, and the KS distance of its n-answer optimum to the law."""
    law = openness_law(alpha)
    u = openness_utility(alpha)
    return u, law, ks_distance(_optimum(u, n), law)


def utility_for(target: Any, *, n: int = 1000, n_fit: int = 200, tol: float = 0.02) -> UtilityDesign:
    """Find a utility whose optimal rewards follow ``target`` (module docstring: reachability and method).

    Parameters
    ----------
    target : float, frozen scipy.stats law, or array_like
        A symmetric Beta shape alpha, a law on [0, 1], or a sample of rewards in [0, 1].
    n : int, default 1000
        Answers of the verification solve.
    n_fit : int, default 200
        Answers of the solves inside the numerical fit (a combination of utilities of different degrees has an
        optimum that depends on n, so n_fit should not be far below n; a numerical design takes about 2 minutes
        on 2 CPU cores).
    tol : float, default 0.02
        Asymmetry and support tolerance (in reward units), and the KS level a numerical design must reach.

    Returns
    -------
    UtilityDesign

    Examples
    --------
    >>> design = utility_for(0.3)
    >>> design.utility.name, design.exact, design.ks < 0.01
    ('x^0.4', True, True)
    >>> bell = utility_for(stats.beta(3, 3))
    >>> bell.reachable, "more concentrated in the middle" in bell.message, bell.utility.name
    (False, True, '-1/x')
    """
    alpha = _beta_shape(target)
    if alpha is not None and alpha <= 1:
        u, law, ks = _exact(alpha, n)
        return UtilityDesign(u, ks, n, True, True, law, {alpha: 1.0}, f"exact: Beta({alpha:g}, {alpha:g}) is {u.name}")
    q = _quantiles(stats.beta(alpha, alpha) if alpha is not None else target)
    problems = []
    asymmetry = float(np.mean(np.abs(q + q[::-1] - 1.0)) / 2.0)
    if asymmetry > tol:
        problems.append(f"not symmetric about 1/2 (W1 to its mirror image {2 * asymmetry:.3f})")
    if q[0] > tol or q[-1] < 1 - tol:
        problems.append(f"its support [{q[0]:.3f}, {q[-1]:.3f}] does not reach 0 and 1 (the best answer gets 1)")
    if alpha is not None and alpha > 1:
        problems.append(
            f"more concentrated in the middle than the uniform law (best symmetric Beta shape {alpha:g} > 1)"
        )
    nearest_alpha = min(alpha, 1.0) if alpha is not None else fit_beta_shape(q)
    nearest = openness_law(nearest_alpha)
    if alpha is None and not problems:
        # A bell more peaked than uniform: the W1 fit of the Beta shape presses against alpha = 1.
        uniform_gap = float(np.mean(np.abs(q - QUANTILE_LEVELS)))
        bell = float(np.mean(np.abs(q - 0.5))) < float(np.mean(np.abs(QUANTILE_LEVELS - 0.5))) - tol
        if nearest_alpha > 0.999 and bell and uniform_gap > tol:
            problems.append("more concentrated in the middle than the uniform law")
    if problems:
        u, _, ks = _exact(nearest_alpha, n)
        message = (
            f"not reachable: {'; '.join(problems)}; returned the nearest reachable law "
            f"Beta({nearest_alpha:.3g}, {nearest_alpha:.3g}) and its utility {u.name}"
        )
        return UtilityDesign(u, ks, n, False, False, nearest, {nearest_alpha: 1.0}, message)
    return _design(q, nearest_alpha, nearest, n, n_fit, tol)


def _design(q: np.ndarray, alpha: float, nearest: Any, n: int, n_fit: int, tol: float) -> UtilityDesign:
    """Fit positive Box-Cox weights to the target's quantiles, then verify at n answers."""
    levels = BASIS_OPENNESS
    start = np.full(len(levels), -3.0)
    start[int(np.argmin([abs(o - alpha) for o in levels]))] = 0.0

    def weights_of(theta: np.ndarray) -> np.ndarray:
        w = np.exp(theta - theta.max())
        w[0] = max(w[0], 1e-6)  # the linear member alone is no barrier; keep some weight elsewhere too
        return w / w.sum()

    def loss(theta: np.ndarray) -> float:
        rewards = _optimum(openness_mixture(weights_of(theta), levels), n_fit)
        return float(np.mean(np.abs(np.quantile(rewards, QUANTILE_LEVELS, method="inverted_cdf") - q)))

    fit = optimize.minimize(loss, start, method="Nelder-Mead", options={"maxiter": 300, "xatol": 1e-3, "fatol": 1e-5})
    weights = weights_of(fit.x)
    u = openness_mixture(weights, levels)
    ks = ks_distance(_optimum(u, n), q)
    ok = ks <= tol
    message = (
        f"numerical design: optimum of {n} answers within KS {ks:.4f} of the target"
        if ok
        else f"numerical design reached only KS {ks:.4f} > {tol} at n = {n}; the nearest symmetric Beta law is "
        f"Beta({alpha:.3g}, {alpha:.3g}) ({openness_utility(alpha).name})"
    )
    return UtilityDesign(
        u, ks, n, True, False, nearest, dict(zip(levels, weights.round(6).tolist(), strict=True)), message
    )
