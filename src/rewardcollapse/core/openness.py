r"""Prompt-aware utilities indexed by openness: one continuous family from closed (U = x) to open (U = -1/x).

The limit laws of the power family (Song et al., 2023, Theorem 3 and Table 1) are symmetric Beta laws: ``x^a``
gives Beta((1-a)/2, (1-a)/2), ``log`` Beta(1/2, 1/2), ``-x^-a`` Beta((1+a)/2, (1+a)/2), and at the ends ``x`` puts
mass 1/2 at 0 and 1 (the limit alpha -> 0) while ``-1/x`` gives the uniform law Beta(1, 1). Indexing the family by
the Beta shape itself, **openness** :math:`o = \alpha \in [0, 1]`, makes the map from a prompt's openness to its
reward distribution the identity:

.. math::

    o \;\mapsto\; \alpha = o \;\mapsto\; \lambda = 1 - 2o \;\mapsto\;
    U_o(x) = \frac{x^{\lambda} - 1}{\lambda} \quad (U_{1/2}(x) = \log x),

whose n-answer optimum tends to Beta(o, o). :math:`U_o` is the Box-Cox transform: a positive multiple of
:math:`x^\lambda` (:math:`\lambda > 0`), of :math:`-x^{\lambda}` (:math:`\lambda < 0`) plus a constant, so it has
the same optimal rewards as the named utility, and it is continuous in :math:`o` (the log at :math:`o = 1/2` is its
limit) with :math:`U_o'(1) = 1` for every :math:`o`, so prompts of different openness pull with gradients of the same
scale in one batch. Closed prompts (one right answer, :math:`o = 0`) get rewards at the extremes; open prompts
(:math:`o = 1`) get rewards spread uniformly; in between, the spread grows with :math:`o`.

:func:`openness_utility` returns the named member (``"x"``, ``"x^0.6"``, ``"log"``, ``"-x^-0.4"``, ``"-1/x"``), which
the solver and :func:`~rewardcollapse.core.limits.limit_distribution` know; the training loss evaluates the Box-Cox
form with one :math:`o` per prompt (``ranking_loss(..., utilities=openness, family="openness")``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from rewardcollapse.core.checks import check_eps, check_openness
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.core.laws import symmetric_law
from rewardcollapse.core.utilities import Utility, UtilityFamily, utility, utility_from_family

__all__ = [
    "QUANTILE_LEVELS",
    "fit_beta_shape",
    "openness_exponent",
    "openness_family",
    "openness_from_rankings",
    "openness_from_scores",
    "openness_law",
    "openness_mixture",
    "openness_utility",
]

_SMALL = 1e-4  # below |lambda * log x| of this, (x^lambda - 1)/lambda uses its series (relative error < 1e-12)


def openness_exponent(openness: float) -> float:
    r"""The Box-Cox exponent :math:`\lambda = 1 - 2o` of openness :math:`o` (1 closed ... -1 open)."""
    return 1.0 - 2.0 * check_openness(openness)


def openness_utility(openness: float, *, eps: float = 0.0) -> Utility:
    """The named utility of openness ``o``: ``x`` (o = 0), ``x^(1-2o)``, ``log`` (o = 1/2), ``-x^-(2o-1)``, ``-1/x``.

    Examples
    --------
    >>> [openness_utility(o).name for o in (0, 0.2, 0.5, 0.8, 1)]
    ['x', 'x^0.6', 'log', '-x^-0.6', '-1/x']
    """
    lam = openness_exponent(openness)
    if lam == 1.0:
        return utility("x", eps=eps)
    if lam == 0.0:
        return utility("log", eps=eps)
    if lam > 0:
        return utility("x^a", a=lam, eps=eps)
    return utility("-x^-a", a=-lam, eps=eps)


def openness_law(openness: float):
    """The limit law of openness ``o``'s optimal rewards: Beta(o, o), and mass 1/2 at 0 and 1 for o = 0.

    Returns a frozen ``scipy.stats`` distribution with an ``atoms`` attribute, like
    :func:`~rewardcollapse.core.limits.limit_distribution`.

    Examples
    --------
    >>> openness_law(0.3).args, openness_law(1.0).args
    ((0.3, 0.3), (1.0, 1.0))
    """
    return symmetric_law(check_openness(openness))


# The Box-Cox formulas with parameter p["o"] (a number, or a tensor of one openness per prompt that broadcasts).
def _exprel(z, ops):
    """(exp(z) - 1) / z, equal to 1 at z = 0, without cancellation near 0."""
    small = ops.abs(z) < _SMALL
    safe = ops.where(small, ops.full_like(z, 1.0), z)
    return ops.where(small, 1.0 + z / 2.0 + z * z / 6.0, ops.expm1(safe) / safe)


def _boxcox(x, ops, p):
    lam = 1.0 - 2.0 * p["o"]
    log_x = ops.log(x)
    return log_x * _exprel(lam * log_x, ops)


def _boxcox_d1(x, ops, p):
    return x ** (-2.0 * p["o"])  # x^(lambda - 1)


def _boxcox_d2(x, ops, p):
    return -2.0 * p["o"] * x ** (-2.0 * p["o"] - 1.0)


def _openness_limit_law(p) -> Any | None:
    """Beta(o, o) for one openness; none for a tensor of them (one per prompt, in the loss)."""
    return symmetric_law(p["o"]) if isinstance(p["o"], float) else None


def _openness_is_linear(p) -> bool:
    return isinstance(p["o"], float) and p["o"] == 0.0


def openness_family(openness: Any = 0.5, *, eps: float = 0.0) -> Utility:
    r"""The Box-Cox utility :math:`U_o(x) = (x^{1-2o} - 1)/(1 - 2o)` as a :class:`Utility`.

    ``openness`` may be a number, or an array or tensor of openness values that broadcasts against the inputs
    (the training loss passes one per prompt). With a number in (0, 1] it has the optimal rewards and limit law of
    :func:`openness_utility` (a positive affine transform of it); prefer that one for the solver.

    Examples
    --------
    >>> u = openness_family(0.5)
    >>> round(float(u(np.e)), 12), round(float(openness_family(0.0)(3.0)), 12), float(u.derivative(1.0))
    (1.0, 2.0, 1.0)
    """
    # U(0+) and U'(0+): -1/lambda and infinite slope for 0 < o < 1/2, -inf from o = 1/2 on, slope 1 at o = 0.
    value_at_zero, slope_at_zero = -math.inf, math.inf
    if np.ndim(openness) == 0 and type(openness).__module__.partition(".")[0] != "torch":
        openness = check_openness(openness)
        lam = 1.0 - 2.0 * openness
        value_at_zero = -1.0 / lam if lam > 0 else -math.inf
        slope_at_zero = 1.0 if openness == 0 else math.inf
    eps = check_eps(eps)
    family = UtilityFamily(
        _boxcox, _boxcox_d1, _boxcox_d2, False, value_at_zero, slope_at_zero, _openness_limit_law, _openness_is_linear
    )
    return utility_from_family(
        "openness" if eps == 0 else f"openness[eps={eps:g}]", "openness", {"o": openness}, eps, family
    )


def openness_mixture(weights: Any, levels: tuple[float, ...]) -> Utility:
    r"""The positive combination :math:`\sum_k w_k U_{o_k}` of the openness family's members, as a Utility.

    The basis of the numerical designs of :func:`~rewardcollapse.core.inverse.utility_for`. With some weight on an
    openness above 0 it is a barrier (infinitely steep at 0).
    """
    params = [{"o": o} for o in levels]

    def value(x, ops, p):
        return sum(w * _boxcox(x, ops, q) for w, q in zip(weights, params, strict=True))

    def d1(x, ops, p):
        return sum(w * _boxcox_d1(x, ops, q) for w, q in zip(weights, params, strict=True))

    def d2(x, ops, p):
        return sum(w * _boxcox_d2(x, ops, q) for w, q in zip(weights, params, strict=True))

    name = " + ".join(f"{w:.3g} U_{o:g}" for w, o in zip(weights, levels, strict=True) if w > 0)
    return utility_from_family(
        name, "openness-mixture", {}, 0.0, UtilityFamily(value, d1, d2, False, -math.inf, math.inf)
    )


QUANTILE_LEVELS = (np.arange(1000) + 0.5) / 1000
"""The 1000 midpoint levels ``(k + 0.5) / 1000`` at which laws are compared by their quantiles."""


def fit_beta_shape(quantiles_or_sample) -> float:
    """Alpha in [0, 1] of the symmetric Beta law closest in 1-Wasserstein distance to the symmetrised input.

    The input is a sample of values in [0, 1] (any length >= 2), or 1000 quantiles at the midpoints
    ``(k + 0.5) / 1000``. Symmetrising first (averaging the law and its mirror image ``1 - r``) matches the symmetry
    of every reachable reward law.
    """
    values = _real_numbers(quantiles_or_sample, "`quantiles_or_sample`").ravel()
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise InputValueError("fitting a Beta shape needs at least 2 finite values")
    # For 1000 sorted quantiles at the midpoints, the inverted empirical CDF at those levels returns them as they are.
    q = np.quantile(values, QUANTILE_LEVELS, method="inverted_cdf")
    symmetric = (q + 1.0 - q[::-1]) / 2.0

    def distance(alpha: float) -> float:
        return float(np.mean(np.abs(stats.beta(alpha, alpha).ppf(QUANTILE_LEVELS) - symmetric)))

    from scipy import optimize

    best = optimize.minimize_scalar(distance, bounds=(1e-3, 1.0), method="bounded", options={"xatol": 1e-4})
    alpha = float(best.x)
    # Rewards all at 0 and 1 sit at the bounded search's edge; report the closed end exactly.
    return 0.0 if distance(1e-3) <= distance(alpha) and alpha < 2e-3 else alpha


def _real_numbers(values: Any, name: str) -> np.ndarray:
    """``values`` as a float array when it holds real numbers only (a list, tuple or numeric array).

    Anything else is an error naming ``name`` and the first entry that is no number, instead of numpy's conversion
    message (which names neither); booleans and numeric strings are refused rather than read as numbers.
    """
    if hasattr(values, "__array__") and not isinstance(values, np.ndarray):
        values = np.asarray(values)  # pandas columns, tensors on the CPU
    if isinstance(values, np.ndarray):
        if values.dtype.kind in "iuf":
            return values.astype(float)
        values = values.tolist()
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InputTypeError(f"{name} must be a list of numbers, got {type(values).__name__} {values!r:.60}")
    for position, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputTypeError(
                f"{name}: entry {position} must be a number, got {value!r:.60}; give one number per answer"
            )
    return np.asarray(values, dtype=float)


def _rankings_matrix(rankings: Any) -> np.ndarray:
    """The ``(raters, answers)`` float matrix of ``rankings``: each rater's row checked, all rows of one length.

    A ragged input is an error naming the first rater whose row differs in length from rater 0's.
    """
    if isinstance(rankings, np.ndarray) and rankings.dtype.kind in "iuf":
        return rankings.astype(float)
    rows = rankings.tolist() if isinstance(rankings, np.ndarray) else rankings
    if isinstance(rows, str | bytes) or not isinstance(rows, Sequence):
        raise InputTypeError(
            f"`rankings` must be a list of raters' rankings (one list of ranks per rater), got {type(rows).__name__}"
        )
    raters = [_real_numbers(row, f"`rankings` rater {r}").ravel() for r, row in enumerate(rows)]
    for r, row in enumerate(raters[1:], start=1):
        if row.size != raters[0].size:
            raise InputValueError(
                f"`rankings` rater {r} ranks {row.size} answers but rater 0 ranks {raters[0].size}; every rater "
                "must give one rank (or score) per answer, for the same answers in the same order"
            )
    return np.array(raters) if raters else np.empty((0, 0))


def openness_from_scores(scores) -> float:
    """Openness of one prompt from quality scores of its answers (human or judge ratings, any scale).

    The scores are rescaled to [0, 1] by their minimum and maximum and compared, sorted, with the optimal rewards
    of as many ranked answers under each member of the openness family; the openness whose optimum is closest (mean
    absolute difference, a 1-Wasserstein distance) is returned. Above 200 answers the optimum is replaced by the
    quantiles of its limit law Beta(o, o). Scores in two clusters (one right answer and wrong ones) give 0; scores
    spread like the optimum of -1/x (many acceptable answers of graded quality) give 1.

    Examples
    --------
    >>> openness_from_scores([0, 0, 0, 10, 10, 10])
    0.0
    >>> from rewardcollapse.core.solver import optimal_rewards
    >>> round(openness_from_scores(optimal_rewards(10, "-1/x").rewards), 3)
    1.0
    """
    from scipy import optimize

    values = _real_numbers(scores, "`scores`").ravel()
    if values.size < 2 or not np.all(np.isfinite(values)):
        raise InputValueError(f"`scores` must hold at least 2 finite numbers, got {values.size} values")
    low, high = values.min(), values.max()
    if high == low:
        raise InputValueError("`scores` are all equal: the answers cannot be told apart, so no openness follows")
    observed = np.sort((values - low) / (high - low))
    n = observed.size

    def reference(o: float) -> np.ndarray:
        if n > 200:
            return openness_law(o).ppf((np.arange(n) + 0.5) / n) if o > 0 else (np.arange(n) >= n / 2).astype(float)
        from rewardcollapse.core.solver import optimal_rewards

        return np.sort(optimal_rewards(n, openness_utility(o)).rewards)

    def distance(o: float) -> float:
        return float(stats.wasserstein_distance(reference(o), observed))

    best = optimize.minimize_scalar(distance, bounds=(0.0, 1.0), method="bounded", options={"xatol": 1e-4})
    # The bounded search never evaluates the ends themselves; they are the answers for the two extreme shapes.
    candidates = [(distance(0.0), 0.0), (distance(1.0), 1.0), (best.fun, float(best.x))]
    return min(candidates)[1]


def openness_from_rankings(rankings) -> float:
    """Openness from several raters' rankings of the same answers: 1 - Kendall's W (a heuristic).

    ``rankings`` is ``(raters, answers)``: each row one rater's ranks or scores (lower rank = better; ties allowed,
    averaged). Kendall's coefficient of concordance W (with the tie correction) is 1 when all raters agree and 0
    when their rankings cancel out. The heuristic reads disagreement as openness: a closed prompt has one right
    answer that careful raters agree on; an open prompt has many good answers whose order is a matter of taste.
    Assumptions: the raters rank independently, all rank the same answers, and their disagreement comes from the
    prompt rather than from noise or carelessness (which would also lower W).

    Examples
    --------
    >>> openness_from_rankings([[1, 2, 3, 4], [1, 2, 3, 4]])
    0.0
    >>> openness_from_rankings([[1, 2, 3, 4], [4, 3, 2, 1]])
    1.0
    """
    ranks = _rankings_matrix(rankings)
    if ranks.ndim != 2 or ranks.shape[0] < 2 or ranks.shape[1] < 2:
        raise InputValueError(f"`rankings` must be (raters >= 2, answers >= 2), got shape {ranks.shape}")
    rater, answer = np.unravel_index(np.argmin(np.isfinite(ranks)), ranks.shape)
    if not np.isfinite(ranks[rater, answer]):
        raise InputValueError(
            f"`rankings` must hold finite numbers; rater {rater} gives {ranks[rater, answer]} for answer {answer}"
        )
    m, n = ranks.shape
    ranks = np.apply_along_axis(stats.rankdata, 1, ranks)  # average ranks for ties
    totals = ranks.sum(axis=0)
    spread = float(np.sum((totals - totals.mean()) ** 2))
    ties = 0.0
    for row in ranks:
        _, counts = np.unique(row, return_counts=True)
        ties += float(np.sum(counts**3 - counts))
    denominator = m * m * (n**3 - n) - m * ties
    if denominator <= 0:
        raise InputValueError("every rater tied all answers: there is no ranking to agree on")
    w = 12.0 * spread / denominator
    return float(np.clip(1.0 - w, 0.0, 1.0))
