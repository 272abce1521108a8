r"""Reward collapse, measured: how far apart the reward distributions of prompt groups are, and ranking quality.

**Collapse index.** Prompts fall in groups :math:`g` (open, closed, ...), each with a target law :math:`T_g` of
within-prompt rewards. Each prompt's rewards are first rescaled to :math:`[0, 1]` by their own minimum and maximum
(``rescale=True``; collapse is about the *shape* of a prompt's reward distribution, not its offset or scale), and
the group's law :math:`Q_g` pools the rescaled rewards of its prompts. With :math:`W_1` the 1-Wasserstein distance
(the mean absolute difference of quantile functions),

.. math::

    \mathrm{CI} = \frac{\sum_{g < h} W_1(Q_g, Q_h)}{\sum_{g < h} W_1(T_g, T_h)},

0 when every group has the same reward distribution (collapse) and 1 when the groups are as far apart as their
targets, as when each sits on its target. It can exceed 1 when the groups are further apart than their targets.

For prompts :math:`b` with rewards :math:`r_{b,k}` and ranked pairs :math:`P_b = \{(i, j): i \succ j\}`:

* pairwise accuracy: the share of all ranked pairs with :math:`r_i > r_j`, a tie counting one half;
* Kendall tau of a prompt: :math:`(C_b - D_b) / |P_b|` with :math:`C_b` (:math:`D_b`) the ranked pairs scored in
  (against) their order. On a strict total order with distinct rewards this is Kendall's :math:`\tau`; on ties and
  partial orders it counts only the pairs the data ranks;
* reward mean and standard deviation over all answers, and the spread: the mean over prompts of
  :math:`\max_k r_{b,k} - \min_k r_{b,k}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rewardcollapse.core.errors import InputValueError

__all__ = [
    "COLLAPSED_AT_MOST",
    "SEPARATED_AT_LEAST",
    "collapse_index",
    "collapse_verdict",
    "group_diagnostics",
    "pooled_groups",
    "quantile_function",
    "ranking_metrics",
    "rescale_per_prompt",
    "wasserstein_1",
]

_GRID = (np.arange(2000) + 0.5) / 2000  # quantile levels for W1 (midpoints: 2.5e-4 resolution)

COLLAPSED_AT_MOST = 0.25
"""A collapse index at or below this reads as collapse: the groups' reward distributions are nearly alike."""

SEPARATED_AT_LEAST = 0.6
"""A collapse index at or above this reads as separated: the groups are most of the way to their targets."""


def collapse_verdict(index: float) -> str:
    """``"collapsed"`` (index <= 0.25), ``"separated"`` (>= 0.6) or ``"partly separated"`` in between.

    Examples
    --------
    >>> collapse_verdict(0.1), collapse_verdict(0.4), collapse_verdict(0.85)
    ('collapsed', 'partly separated', 'separated')
    """
    if index <= COLLAPSED_AT_MOST:
        return "collapsed"
    if index >= SEPARATED_AT_LEAST:
        return "separated"
    return "partly separated"


def ranking_metrics(rewards, pairs, mask=None) -> dict[str, float]:
    """Pairwise accuracy, mean Kendall tau per prompt, and the mean, spread and deviation of the rewards.

    Parameters
    ----------
    rewards : array_like
        ``(P, K)`` rewards; padding entries are ignored (NaN or masked).
    pairs : array_like
        ``(P, K, K)`` bool, True where answer ``i`` is ranked above answer ``j``.
    mask : array_like, optional
        ``(P, K)`` bool of real answers; default: the entries of ``rewards`` that are not NaN.

    Returns
    -------
    dict
        ``pairwise_accuracy``, ``kendall_tau``, ``reward_mean``, ``reward_std``, ``reward_spread``.

    Examples
    --------
    >>> m = ranking_metrics([[0.9, 0.5, 0.6]], [[[0, 1, 1], [0, 0, 1], [0, 0, 0]]])
    >>> round(m["pairwise_accuracy"], 3), round(m["kendall_tau"], 3), round(m["reward_spread"], 3)
    (0.667, 0.333, 0.4)
    """
    rewards = np.asarray(rewards, dtype=float)
    pairs = np.asarray(pairs, dtype=bool)
    if rewards.ndim != 2 or pairs.shape != (*rewards.shape, rewards.shape[1]):
        raise InputValueError(f"`rewards` must be (P, K) and `pairs` (P, K, K), got {rewards.shape} and {pairs.shape}")
    mask = ~np.isnan(rewards) if mask is None else np.asarray(mask, dtype=bool)
    pairs = pairs & mask[:, :, None] & mask[:, None, :]
    filled = np.where(mask, rewards, 0.0)
    gaps = filled[:, :, None] - filled[:, None, :]  # (P, K, K)
    concordant = ((gaps > 0) & pairs).sum(axis=(1, 2))
    discordant = ((gaps < 0) & pairs).sum(axis=(1, 2))
    ties = ((gaps == 0) & pairs).sum(axis=(1, 2))
    count = pairs.sum(axis=(1, 2))
    ranked = count > 0
    valid = filled[mask]
    spread = np.where(mask, rewards, -np.inf).max(axis=1) - np.where(mask, rewards, np.inf).min(axis=1)
    total = count.sum()
    return {
        "pairwise_accuracy": float((concordant.sum() + 0.5 * ties.sum()) / total) if total else float("nan"),
        "kendall_tau": float(((concordant - discordant)[ranked] / count[ranked]).mean()) if total else float("nan"),
        "reward_mean": float(valid.mean()) if valid.size else float("nan"),
        "reward_std": float(valid.std()) if valid.size else float("nan"),
        "reward_spread": float(spread[mask.any(axis=1)].mean()) if valid.size else float("nan"),
    }


def rescale_per_prompt(rewards) -> list[np.ndarray]:
    """Each prompt's rewards mapped to [0, 1] by its own minimum and maximum (all 0.5 when they are all equal)."""
    out = []
    for row in rewards:
        r = np.asarray(row, dtype=float)
        r = r[~np.isnan(r)]
        low, high = r.min(), r.max()
        out.append(np.full_like(r, 0.5) if high == low else (r - low) / (high - low))
    return out


def quantile_function(target, levels: np.ndarray = _GRID) -> np.ndarray:
    """Quantiles at ``levels`` of a frozen scipy.stats law (its ``ppf``) or of a sample (inverted empirical CDF)."""
    if hasattr(target, "ppf"):
        return np.asarray(target.ppf(levels), dtype=float)
    return np.quantile(_sample(target), levels, method="inverted_cdf")


def _sample(values) -> np.ndarray:
    sample = np.asarray(values, dtype=float).ravel()
    if sample.size == 0 or np.isnan(sample).any():
        raise InputValueError("a target sample must be a non-empty array of numbers without NaN")
    return sample


def wasserstein_1(a, b) -> float:
    """1-Wasserstein distance between two samples or laws: the mean absolute difference of their quantile functions.

    Two samples: ``scipy.stats.wasserstein_distance``, exact. Where one side is a law (a frozen ``scipy.stats``
    distribution), its quantile function is integrated on 2000 midpoint levels (within 1/2000 of the range).

    Examples
    --------
    >>> wasserstein_1([0.0, 1.0], [0.5, 0.5])
    0.5
    """
    from scipy import stats

    if hasattr(a, "ppf") or hasattr(b, "ppf"):
        return float(np.mean(np.abs(quantile_function(a) - quantile_function(b))))
    return float(stats.wasserstein_distance(_sample(a), _sample(b)))


def pooled_groups(rewards, groups, *, rescale: bool = True) -> dict[Any, np.ndarray]:
    """Each group's rewards pooled over its prompts (rescaled per prompt first by default), in order of appearance."""
    if len(rewards) != len(groups):
        raise InputValueError(f"`rewards` has {len(rewards)} prompts but `groups` has {len(groups)} labels")
    rows = rescale_per_prompt(rewards) if rescale else [np.asarray(r, dtype=float) for r in rewards]
    pooled: dict[Any, list[np.ndarray]] = {}
    for row, group in zip(rows, groups, strict=True):
        pooled.setdefault(group, []).append(row[~np.isnan(row)])
    return {group: np.concatenate(parts) for group, parts in pooled.items()}


def collapse_index(rewards, groups, targets, *, rescale: bool = True) -> float:
    """Collapse index (module docstring): 0 = all groups alike, 1 = groups as far apart as their targets.

    Parameters
    ----------
    rewards : sequence of array_like
        One array of rewards per prompt (lengths may differ).
    groups : sequence
        One group label per prompt, e.g. ``"open"``/``"closed"``.
    targets : mapping
        Group label -> target law: a frozen ``scipy.stats`` distribution or a sample of rewards (e.g. the optimal
        rewards of the group's utility from :func:`rewardcollapse.optimal_rewards`).
    rescale : bool, default True
        Map each prompt's rewards to [0, 1] by its minimum and maximum first.

    Raises
    ------
    ValueError
        With fewer than two groups, a group without a target, or targets that are all alike (the index is then
        undefined).

    Examples
    --------
    >>> targets = {"open": np.linspace(0, 1, 8), "closed": np.repeat([0.0, 1.0], 4)}
    >>> alike = [np.linspace(0, 1, 8)] * 4
    >>> collapse_index(alike, ["open", "closed"] * 2, targets)
    0.0
    >>> apart = [np.linspace(0, 1, 8), np.repeat([0.0, 1.0], 4)] * 2
    >>> collapse_index(apart, ["open", "closed"] * 2, targets)
    1.0
    """
    pooled = pooled_groups(rewards, groups, rescale=rescale)
    if len(pooled) < 2:
        raise InputValueError(f"`groups` must name at least two groups to compare, got {sorted(map(str, pooled))}")
    missing = [g for g in pooled if g not in targets]
    if missing:
        raise InputValueError(f"`targets` has no law for groups {missing}; give one per group")
    names = list(pooled)
    between = target_between = 0.0
    for i, g in enumerate(names):
        for h in names[i + 1 :]:
            between += wasserstein_1(pooled[g], pooled[h])
            target_between += wasserstein_1(targets[g], targets[h])
    if target_between == 0:
        raise InputValueError(
            "the targets of the groups are all the same law, so no separation is expected (with 2 or 3 answers "
            "per prompt the open and closed optima coincide: give prompts with at least 4 ranked answers)"
        )
    return round(between / target_between, 12)


def group_diagnostics(
    rewards, groups, targets, pairs=None, *, limits=None, rescale: bool = True
) -> dict[Any, dict[str, float]]:
    """Per group: KS and 1-Wasserstein distance to its target, prompts, and (with ``pairs``) ranking metrics.

    ``pairs`` is one ``(n, n)`` bool matrix per prompt (answer ``i`` above ``j``); the ranking metrics use the
    raw rewards. ``limits`` maps groups to a second law (e.g. the limit law of the group's utility) whose KS
    distance is reported as ``ks_limit``.
    """
    from rewardcollapse.core.limits import ks_distance

    pooled = pooled_groups(rewards, groups, rescale=rescale)
    out: dict[Any, dict[str, float]] = {}
    for group, values in pooled.items():
        target = targets[group]
        ks = ks_distance(values, target)  # a law (atoms handled) or a sample
        members = [b for b, g in enumerate(groups) if g == group]
        entry = {"prompts": len(members), "ks": ks, "wasserstein": wasserstein_1(values, target)}
        if pairs is not None:
            width = max(len(rewards[b]) for b in members)
            matrix = np.full((len(members), width), np.nan)
            above = np.zeros((len(members), width, width), dtype=bool)
            for row, b in enumerate(members):
                n = len(rewards[b])
                matrix[row, :n] = rewards[b]
                above[row, :n, :n] = pairs[b]
            metrics = ranking_metrics(matrix, above)
            entry.update(pairwise_accuracy=metrics["pairwise_accuracy"], kendall_tau=metrics["kendall_tau"])
        if limits is not None:
            entry["ks_limit"] = ks_distance(values, limits[group])
        out[group] = entry
    return out
