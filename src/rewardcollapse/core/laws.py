"""The closed-form limit laws of the power family as frozen ``scipy.stats`` laws with their atoms.

Every closed-form limit law of the paper (Song et al., 2023, Theorem 3) is a symmetric Beta law Beta(alpha, alpha)
with alpha in [0, 1], the uniform law at alpha = 1 and, at alpha = 0, mass 1/2 at 0 and at 1. The utility families
(:mod:`rewardcollapse.core.utilities`, :mod:`rewardcollapse.core.openness`) own which alpha they converge to; this
module only builds the law. Each law carries an ``atoms`` attribute ``{point: mass}`` (empty without atoms).
"""

from __future__ import annotations

from typing import Any

from scipy import stats

__all__ = ["symmetric_law", "two_point_law"]


def two_point_law():
    """Mass 1/2 at 0 and at 1: the limit law of ``U = x`` (``scipy.stats.bernoulli(0.5)``, with its atoms)."""
    law = stats.bernoulli(0.5)
    law.atoms = {0.0: 0.5, 1.0: 0.5}
    return law


def symmetric_law(alpha: float, *, uniform: bool = False) -> Any:
    """Beta(alpha, alpha) for 0 < alpha <= 1, the two-point law at alpha = 0; ``uniform=True`` names Beta(1, 1) so.

    Examples
    --------
    >>> symmetric_law(0.5).args, symmetric_law(0.0).atoms, symmetric_law(1.0, uniform=True).dist.name
    ((0.5, 0.5), {0.0: 0.5, 1.0: 0.5}, 'uniform')
    """
    if alpha == 0:
        return two_point_law()
    law = stats.uniform(0.0, 1.0) if uniform and alpha == 1 else stats.beta(alpha, alpha)
    law.atoms = {}
    return law
