"""Figures of optimal rewards and their limit laws (matplotlib is imported only when a plot is made)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from rewardcollapse.core import limit_distribution, optimal_rewards, utility
from rewardcollapse.diagnostics import pooled_groups

__all__ = [
    "DEFAULT_PLOT_UTILITIES",
    "plot_collapse_curves",
    "plot_group_rewards",
    "plot_limit_laws",
    "plot_optimal_rewards",
    "pyplot",
]

DEFAULT_PLOT_UTILITIES = ("x", "x^0.5", "log", "-x^-0.5", "-1/x", "logsigmoid")


def _needs_file_backend() -> bool:
    """True where there is no screen and nobody chose a backend: pyplot not imported yet, no ``MPLBACKEND``."""
    chosen = "matplotlib.pyplot" in sys.modules or "MPLBACKEND" in os.environ
    screen = not sys.platform.startswith("linux") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    return not chosen and not screen


def pyplot():
    """matplotlib.pyplot, with the file backend Agg chosen only where :func:`_needs_file_backend`.

    A user's backend (interactive, inline in a notebook, or set with ``MPLBACKEND``) is never switched.
    """
    import matplotlib

    if _needs_file_backend():
        matplotlib.use("Agg")
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
    plt = pyplot()
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
    plt = pyplot()
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


def plot_group_rewards(
    rewards, groups, targets=None, *, rescale: bool = True, bins: int = 20, ax=None, title=None, reference=None
):
    """Histograms of each group's (rescaled) within-prompt rewards, with the target laws; returns ``(fig, ax)``.

    The picture of the paper's experiment (Song et al., 2023, Figure 5): with a fixed utility the groups' histograms
    look alike; with a prompt-aware one each follows its own target. ``reference``, a ``(label, values)`` pair, adds
    one more sample drawn as a black outline (``diagnose`` without labels: the pooled collapse point).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax)
    pooled = pooled_groups(rewards, groups, rescale=rescale)
    edges = np.linspace(0.0, 1.0, bins + 1) if rescale else bins
    colours = dict(zip(pooled, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple"), strict=False))
    for group, values in pooled.items():
        weights = np.full(values.shape, 1.0 / values.size)
        ax.hist(values, bins=edges, weights=weights, alpha=0.5, color=colours.get(group), label=f"{group}")
        if targets is not None and group in targets and not hasattr(targets[group], "ppf"):
            target = np.asarray(targets[group], dtype=float)
            ax.hist(
                target,
                bins=edges,
                weights=np.full(target.shape, 1.0 / target.size),
                histtype="step",
                linewidth=1.5,
                color=colours.get(group),
                label=f"{group} target",
            )
    if reference is not None:
        label, values = reference
        values = np.asarray(values, dtype=float)
        weights = np.full(values.shape, 1.0 / values.size)
        ax.hist(values, bins=edges, weights=weights, histtype="step", linewidth=1.5, color="black", label=label)
    ax.set_xlabel("reward (rescaled per prompt)" if rescale else "reward")
    ax.set_ylabel("share of answers")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig, ax


def plot_collapse_curves(
    curves, metric: str = "collapse/index", *, references=None, thresholds: bool = True, ax=None, title=None
):
    """One line per run of a collapse measure against the training step; returns ``(fig, ax)``.

    Parameters
    ----------
    curves : mapping
        Run label -> its points, each a mapping with ``"step"`` and the measure (``metric``), as
        :class:`~rewardcollapse.training.CollapseCallback` records them; points without the measure are skipped.
    metric : str
        The measure to draw, e.g. ``"collapse/index"``, ``"collapse/shape_index"``, ``"collapse/optimum_distance"``.
    references : mapping, optional
        Label -> value, drawn as dotted horizontal lines (e.g. the reward = answer length reference).
    thresholds : bool
        For the indices, shade the collapsed (<= 0.25) and separated (>= 0.6) bands of :func:`collapse_verdict`.
    """
    from rewardcollapse.diagnostics import COLLAPSED_AT_MOST, SEPARATED_AT_LEAST

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5)) if ax is None else (ax.figure, ax)
    if thresholds and metric.endswith("index"):
        ax.axhspan(-0.5, COLLAPSED_AT_MOST, color="tab:red", alpha=0.08, lw=0, label="collapsed")
        ax.axhspan(SEPARATED_AT_LEAST, 1.5, color="tab:green", alpha=0.08, lw=0, label="separated")
    for label, points in curves.items():
        kept = [(p["step"], p[metric]) for p in points if p.get(metric) is not None]
        if kept:
            steps, values = zip(*kept, strict=True)
            ax.plot(steps, values, marker="o", ms=4, label=label)
    for label, value in (references or {}).items():
        if value is not None:
            ax.axhline(value, ls=":", color="grey", lw=1.2)
            ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=7)
    if metric.endswith("index"):
        ax.set_ylim(-0.1, 1.15)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric.removeprefix("collapse/").replace("_", " "))
    if title:
        ax.set_title(title)
    ax.legend(fontsize=7)
    return fig, ax
