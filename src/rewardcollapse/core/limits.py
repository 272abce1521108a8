r"""Limit laws of the optimal rewards as the number of ranked answers grows (Song et al., 2023, Section 3.2).

With :math:`n` answers in a total order, the empirical law of the optimal rewards converges to a law that depends
on :math:`U` only:

=================================  ==========================================================
utility                            limit law
=================================  ==========================================================
:math:`x^a`, :math:`0 < a < 1`     :math:`\mathrm{Beta}((1-a)/2, (1-a)/2)`
:math:`\log x`                     :math:`\mathrm{Beta}(1/2, 1/2)` (the arcsine law)
:math:`-x^{-a}`, :math:`0<a\le1`   :math:`\mathrm{Beta}((1+a)/2, (1+a)/2)`
:math:`-1/x`                       :math:`\mathrm{Uniform}(0, 1)`
:math:`x`                          mass 1/2 at 0 and at 1
anything else                      computed numerically (:func:`numerical_limit`)
=================================  ==========================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from rewardcollapse.core.errors import InputValueError
from rewardcollapse.core.utilities import Utility, utility

__all__ = ["closed_form_limit", "describe_law", "ks_distance", "limit_distribution", "numerical_limit"]


def closed_form_limit(u: str | Utility) -> Any | None:
    """Return the closed-form limit law of a built-in utility with ``eps = 0``, or None when there is none.

    Each utility family owns its law (:meth:`Utility.closed_form_limit`); this is the function form.

    Examples
    --------
    >>> closed_form_limit("log").args
    (0.5, 0.5)
    """
    return utility(u).closed_form_limit()


class tabulated_law_gen(stats.rv_histogram):
    """A law on [0, 1]: atoms at 0 and 1 and, between them, ``scipy.stats.rv_histogram``'s piecewise-linear CDF.

    Built by :func:`numerical_limit` from a CDF tabulated on an increasing grid from 0 to 1, with ``cdf[0]`` the mass
    at 0 and ``1 - cdf[-1]`` the mass at 1. scipy has no law mixing atoms with a density, so the histogram carries
    the continuous part (``pdf`` is its density, scaled by its mass) and only the atoms are added here.
    """

    def __init__(self, grid, cdf, *args, **kwargs):
        self._grid = np.asarray(grid, dtype=float)
        self._table = np.asarray(cdf, dtype=float)
        self._at_zero, self._at_one = float(self._table[0]), float(1.0 - self._table[-1])
        self._inner = self._table[-1] - self._table[0]  # mass of the continuous part
        super().__init__((np.diff(self._table), self._grid), *args, density=False, **kwargs)
        # The support starts just below 0 so that scipy evaluates the CDF at 0 itself, where the atom sits.
        self.a = float(np.nextafter(0.0, -1.0))

    def _updated_ctor_param(self):
        params = super()._updated_ctor_param()
        del params["histogram"], params["density"]
        params.update(grid=self._grid, cdf=self._table)
        return params

    def _cdf(self, x):
        return np.where(x >= 1.0, 1.0, self._at_zero + self._inner * super()._cdf(x))

    def _pdf(self, x):
        return self._inner * super()._pdf(x)

    def _ppf(self, q):
        inner = super()._ppf(np.clip((q - self._at_zero) / self._inner, 0.0, 1.0))
        return np.where(q <= self._at_zero, 0.0, np.where(q > 1.0 - self._at_one, 1.0, inner))

    def _rvs(self, size=None, random_state=None):
        return self._ppf(random_state.uniform(size=size))

    def _munp(self, n):
        return self._at_one + self._inner * super()._munp(n)


def _empirical_cdf(rewards: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """CDF estimate from one n-point optimum: atoms as fractions, the rest linear through mid-rank positions."""
    w = np.sort(rewards)
    n = len(w)
    at_zero, at_one = int(np.sum(w <= 0.0)), int(np.sum(w >= 1.0))
    inner = w[at_zero : n - at_one]
    positions = (at_zero + np.arange(len(inner)) + 0.5) / n
    xs = np.concatenate([[0.0], inner, [1.0]])
    ps = np.concatenate([[at_zero / n], positions, [1.0 - at_one / n]])
    return np.interp(grid, xs, ps)


def numerical_limit(
    u: str | Utility,
    *,
    n: int = 250,
    tol: float = 3e-4,
    max_n: int = 4000,
    grid_size: int = 4001,
):
    r"""Compute the limit law of ``u`` from optimal rewards at growing n, with Richardson extrapolation in 1/n.

    Solves the n-point problem for :math:`n, 2n, 4n, \dots`, estimates each CDF (atoms at 0 and 1 as fractions of
    tied answers, piecewise linear in between), extrapolates :math:`\hat F = 2 F_{2n} - F_n` (the error of
    :math:`F_n` is :math:`O(1/n)`), and stops when two successive extrapolations agree within ``tol`` in sup norm.

    Parameters
    ----------
    u : str or Utility
        Any utility, including logsigmoid and callables.
    n : int, default 250
        First number of answers.
    tol : float, default 3e-4
        Sup-norm agreement of successive extrapolated CDFs.
    max_n : int, default 4000
        Largest n solved; the result says how far it got.
    grid_size : int, default 4001
        Points of the tabulated CDF.

    Returns
    -------
    scipy.stats frozen distribution
        With ``cdf``, ``ppf``, ``pdf`` (of the continuous part), ``rvs``, and ``atoms`` (mass at 0 and at 1);
        ``converged`` and ``sup_change`` record the refinement.
    """
    u = utility(u)
    if n < 10 or max_n < 2 * n:
        raise InputValueError(f"need n >= 10 and max_n >= 2 n, got n={n}, max_n={max_n}")
    # Built-in names are canonical (family, parameters and eps), so the refinement is computed once per process.
    key = (u.name, n, tol, max_n, grid_size)
    if u.family != "custom" and key in _NUMERICAL_CACHE:
        return _NUMERICAL_CACHE[key]
    law = _refine_limit(u, n=n, tol=tol, max_n=max_n, grid_size=grid_size)
    if u.family != "custom":
        _NUMERICAL_CACHE[key] = law
    return law


_NUMERICAL_CACHE: dict[tuple, object] = {}


def _refine_limit(u: Utility, *, n: int, tol: float, max_n: int, grid_size: int):
    from rewardcollapse.core.solver import optimal_rewards

    grid = np.concatenate([[0.0], np.geomspace(1e-12, 0.5, grid_size // 2)])
    grid = np.unique(np.concatenate([grid, 1.0 - grid]))
    cdfs = [_empirical_cdf(optimal_rewards(n, u).rewards, grid)]
    previous, change, size = None, np.inf, n
    while size * 2 <= max_n:
        size *= 2
        cdfs.append(_empirical_cdf(optimal_rewards(size, u).rewards, grid))
        extrapolated = np.clip(2 * cdfs[-1] - cdfs[-2], 0.0, 1.0)
        extrapolated = np.maximum.accumulate(extrapolated)
        if previous is not None:
            change = float(np.max(np.abs(extrapolated - previous)))
            if change <= tol:
                break
        previous = extrapolated
    table = extrapolated
    # Strictly increasing inner table for a well-defined ppf: drop flat steps, keeping the ends.
    keep = np.concatenate([[True], np.diff(table) > 1e-15])
    keep[-1] = True
    law = tabulated_law_gen(grid[keep], table[keep], name=f"limit[{u.name}]")()
    law.atoms = {0.0: float(table[0]), 1.0: float(1.0 - table[-1])}
    law.converged = bool(change <= tol)
    law.sup_change = change
    return law


def limit_distribution(u: str | Utility = "log", *, method: str = "auto", **kwargs):
    """Return the limit law of the optimal rewards of ``u`` as a frozen ``scipy.stats`` distribution.

    Parameters
    ----------
    u : str or Utility
        Any utility spec accepted by :func:`rewardcollapse.utility`.
    method : {"auto", "closed-form", "numerical"}
        ``"auto"`` uses the closed form when one exists (module docstring) and the numerical path otherwise.
    **kwargs
        Passed to :func:`numerical_limit`.

    Returns
    -------
    scipy.stats frozen distribution
        Has an ``atoms`` attribute: the masses at 0 and 1 (empty for laws without atoms).

    Raises
    ------
    ValueError
        For an unknown method, or ``"closed-form"`` for a utility without one.

    Examples
    --------
    >>> law = limit_distribution("-1/x")
    >>> float(law.cdf(0.25))
    0.25
    """
    u = utility(u)
    if method not in ("auto", "closed-form", "numerical"):
        raise InputValueError(f"`method` must be 'auto', 'closed-form' or 'numerical', got {method!r}")
    law = None if method == "numerical" else closed_form_limit(u)
    if law is not None:
        return law
    if method == "closed-form":
        raise InputValueError(f"utility {u.name!r} has no closed-form limit law; use method='numerical' or 'auto'")
    return numerical_limit(u, **kwargs)


def ks_distance(rewards: np.ndarray, law) -> float:
    """Kolmogorov-Smirnov distance between the empirical law of ``rewards`` and ``law`` (atoms handled).

    ``law`` is a frozen ``scipy.stats`` law (or anything with ``cdf``), or a second sample: then the two-sample
    statistic of ``scipy.stats.ks_2samp``, exact with ties. Against a law the sup is taken on both sides of every
    sample point, which ``scipy.stats.kstest`` does not do: it assumes a continuous law and gets atoms wrong (four
    rewards at 0 and four at 1 against the two-point law give 0.5 there, 0 here).

    Examples
    --------
    >>> round(ks_distance(np.array([0.0, 1.0]), limit_distribution("x")), 12)
    0.0
    >>> round(ks_distance([0.0, 0.5, 1.0], [0.0, 1.0]), 12)
    0.166666666667
    """
    x = np.sort(np.asarray(rewards, dtype=float).ravel())
    n = len(x)
    if n == 0:
        raise InputValueError("`rewards` is empty")
    if not hasattr(law, "cdf"):
        return float(stats.ks_2samp(x, np.asarray(law, dtype=float).ravel()).statistic)
    right = np.asarray(law.cdf(x), dtype=float)
    left = np.asarray(law.cdf(np.nextafter(x, -np.inf)), dtype=float)
    above = np.searchsorted(x, x, side="right") / n  # empirical CDF at x_k, ties included
    below = np.searchsorted(x, x, side="left") / n  # empirical CDF just below x_k
    # Between sample points the empirical CDF is flat, the law's CDF increases: the extremes sit at the samples.
    return float(max(np.max(np.abs(above - right)), np.max(np.abs(below - left))))


def describe_law(law) -> str:
    """Name a law returned by :func:`limit_distribution` for tables and reports.

    Examples
    --------
    >>> describe_law(limit_distribution("log")), describe_law(limit_distribution("x"))
    ('Beta(0.5, 0.5)', 'two-point (1/2 at 0 and at 1)')
    """
    name = getattr(getattr(law, "dist", None), "name", "law")
    if name == "bernoulli":
        return "two-point (1/2 at 0 and at 1)"
    if name == "uniform":
        return "Uniform(0, 1)"
    if name == "beta":
        return "Beta({:g}, {:g})".format(*law.args)
    atoms = getattr(law, "atoms", {})
    return f"numerical (atoms: {atoms.get(0.0, 0):.4f} at 0, {atoms.get(1.0, 0):.4f} at 1)"
