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
form with one :math:`o` per prompt (``ranking_loss(..., utility=openness, family="openness")``).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import stats

from rewardcollapse.core.utilities import Utility, _Family, utility

__all__ = ["openness_exponent", "openness_family", "openness_law", "openness_utility"]

_SMALL = 1e-4  # below |lambda * log x| of this, (x^lambda - 1)/lambda uses its series (relative error < 1e-12)


def _check_openness(openness: float) -> float:
    if isinstance(openness, bool) or not isinstance(openness, int | float | np.floating | np.integer):
        raise TypeError(f"`openness` must be a number in [0, 1], got {type(openness).__name__}")
    if not 0 <= openness <= 1:
        raise ValueError(f"`openness` must be in [0, 1] (0 closed, 1 open-ended), got {openness}")
    return float(openness)


def openness_exponent(openness: float) -> float:
    r"""The Box-Cox exponent :math:`\lambda = 1 - 2o` of openness :math:`o` (1 closed ... -1 open)."""
    return 1.0 - 2.0 * _check_openness(openness)


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
    o = _check_openness(openness)
    law = stats.bernoulli(0.5) if o == 0 else stats.beta(o, o)
    law.atoms = {0.0: 0.5, 1.0: 0.5} if o == 0 else {}
    return law


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
        openness = _check_openness(openness)
        lam = 1.0 - 2.0 * openness
        value_at_zero = -1.0 / lam if lam > 0 else -math.inf
        slope_at_zero = 1.0 if openness == 0 else math.inf
    from rewardcollapse.core.utilities import _check_eps

    eps = _check_eps(eps)
    family = _Family(_boxcox, _boxcox_d1, _boxcox_d2, False, value_at_zero, slope_at_zero)
    name = "openness" if eps == 0 else f"openness[eps={eps:g}]"
    return Utility(
        name=name,
        family="openness",
        params=MappingProxyType({"o": openness}),
        eps=eps,
        _value=family.value,
        _d1=family.d1,
        _d2=family.d2,
        _whole_line=family.whole_line,
        _value_at_zero=family.value_at_zero,
        _slope_at_zero=family.slope_at_zero,
    )
