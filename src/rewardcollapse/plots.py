"""Figures of optimal rewards and their limit laws (matplotlib is imported only when a plot is made)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rewardcollapse.core import limit_distribution, optimal_rewards, utility

__all__ = ["DEFAULT_PLOT_UTILITIES", "plot_limit_laws", "plot_optimal_rewards"]

DEFAULT_PLOT_UTILITIES = ("x", "x^0.5", "log", "-x^-0.5", "-1/x", "logsigmoid")


def _pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _draw_law(ax, law, *, color, label: str | None) -> None:
    """Density of the continuous part as a line; atoms as stems whose height is their mass."""
    atoms = getattr(law, "atoms", {})
    continuous = 1.0 - sum(atoms.values())
    if continuous > 1e-9:
        x = np.linspace(1e-3, 1 - 1e-3, 400)
        ax.plot(x, law.pdf(x), color=color, lw=2, label=label)
        label = None
    for where, mass in atoms.items():
        if mass > 1e-9:
            ax.vlines(where, 0, mass * 10, color=color, lw=3, label=label)
            ax.annotate(f"{mass:.2f}", (where, mass * 10), ha="center", va="bottom", color=color, fontsize=8)
            label = None


def plot_optimal_rewards(
    n: int = 100,
    utilities: Sequence[str] = DEFAULT_PLOT_UTILITIES,
    *,
    bins: int = 20,
    axes: Any = None,
):
    """Histogram the optimal rewards of ``n`` ranked answers for each utility, against its limit law.

    Atoms at 0 and 1 are drawn as stems of height 10 x mass (so 0.5 reaches 5 on the density axis).

    Parameters
    ----------
    n : int, default 100
        Number of answers in the total order.
    utilities : sequence of str
        Utility specs, one panel each.
    bins : int, default 20
        Histogram bins on [0, 1].
    axes : array of matplotlib Axes, optional
        One per utility; a new figure is made when omitted.

    Returns
    -------
    (matplotlib.figure.Figure, numpy.ndarray of Axes)
    """
    plt = _pyplot()
    specs = [utility(s) for s in utilities]
    if axes is None:
        cols = min(3, len(specs))
        rows = -(-len(specs) // cols)
        fig, grid = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), sharey=True, squeeze=False)
        for extra in grid.ravel()[len(specs) :]:
            extra.remove()
        axes = grid.ravel()[: len(specs)]
    else:
        axes = np.atleast_1d(axes)
        fig = axes[0].figure
    for ax, u in zip(axes, specs, strict=True):
        result = optimal_rewards(n, u)
        ax.hist(result.rewards, bins=bins, range=(0, 1), density=True, color="0.75", label=f"optimum, n={n}")
        _draw_law(ax, limit_distribution(u), color="C3", label="limit law")
        ax.set_title(f"U = {u.name}")
        ax.set_xlabel("reward")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(0, 6)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=8, loc="upper center")
    fig.tight_layout()
    return fig, axes


def plot_limit_laws(utilities: Sequence[str] = DEFAULT_PLOT_UTILITIES, *, ax: Any = None):
    """Overlay the limit laws of several utilities: densities as lines, atoms as stems (height 10 x mass).

    Returns
    -------
    (matplotlib.figure.Figure, matplotlib.axes.Axes)
    """
    plt = _pyplot()
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4))
    else:
        fig = ax.figure
    for k, spec in enumerate(utilities):
        u = utility(spec)
        _draw_law(ax, limit_distribution(u), color=f"C{k}", label=f"U = {u.name}")
    ax.set_xlabel("reward")
    ax.set_ylabel("density (atoms: 10 x mass)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(0, 6)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig, ax
