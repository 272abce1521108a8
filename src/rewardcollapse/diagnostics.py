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

**Label-free measures** (:func:`label_free_measures`: no openness labels, any reward model, any ranked data). With
:math:`\tilde r_b` prompt :math:`b`'s rewards rescaled to :math:`[0, 1]` as above:

* *distance to the collapse point*: :math:`D_b = W_1(\tilde r_b, r^\star_b)`, with :math:`r^\star_b` the exact optimum
  of the training utility for the prompt's ranking (:func:`rewardcollapse.optimal_rewards`: the rewards every prompt
  of that ranking converges to once the network fits it, Song et al. 2023, Theorem 1), summarised by its mean over
  prompts. It lies in :math:`[0, 1]`: 0 when the prompt sits at its collapse point.
* *shape spread* :math:`S`: how far apart the prompts' reward shapes are. Each prompt's polarisation
  :math:`\pi_b = \operatorname{mean}_k |2\tilde r_{b,k} - 1|` (1 when its rewards sit at 0 and 1, about 1/2 when they
  spread evenly) orders the prompts; :math:`S` is :math:`W_1` between the pooled rescaled rewards of the less and the
  more polarised half. It is the collapse index's numerator with the prompts split by their own shapes instead of
  labels, in :math:`[0, 1]`.
* *shape spread under collapse* :math:`S_0`: noise alone makes prompts differ, so :math:`S > 0` even when every prompt
  has one shape. :math:`S_0` is the mean of :math:`S` over prompt sets in which the prompts' shapes are exchangeable
  (one shape for all): each prompt's sorted rescaled rewards with each order position's values shuffled across the
  prompts of the same number of answers (a permutation test's null; 100 seeded draws).
* *shape index* :math:`(S - S_0) / (S^\star - S^\star_0)`: the spread beyond noise, in units of the same for as many
  prompts half at the paper's open optimum (``-1/x``) and half at its closed one (``x``), for the median number of
  answers (the exact targets of the paper's prompt-aware training, the collapse index's yardstick). It reads on the
  collapse index's scale (:func:`collapse_verdict`) without labels: about 0 when every prompt has one shape (it can be
  slightly negative), 1 when the prompts split in halves as far apart as the open and closed optima; fewer prompts
  of one kind give less.

Both need prompts of at least 4 answers (with 2 or 3 the rescaled rewards carry at most one free value and the
utilities' optima coincide or are not unique) whose rewards are not all equal; other prompts are left out and counted.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, is_open, prompt_utility
from rewardcollapse.core.errors import InputValueError

__all__ = [
    "AT_COLLAPSE_POINT_AT_MOST",
    "COLLAPSED_AT_MOST",
    "FAR_FROM_COLLAPSE_POINT_AT_LEAST",
    "GROUP_UTILITIES",
    "MIN_ANSWERS",
    "SEPARATED_AT_LEAST",
    "LabelFreeMeasures",
    "RankedMeasures",
    "collapse_index",
    "collapse_verdict",
    "group_diagnostics",
    "label_free_measures",
    "level_label",
    "measure_ranked",
    "optimum_distances",
    "optimum_verdict",
    "polarisation",
    "pooled_groups",
    "prompt_optima",
    "quantile_function",
    "ranking_metrics",
    "rescale_per_prompt",
    "shape_spread",
    "targets_for",
    "wasserstein_1",
]

_GRID = (np.arange(2000) + 0.5) / 2000  # quantile levels for W1 (midpoints: 2.5e-4 resolution)

COLLAPSED_AT_MOST = 0.25
"""A collapse index at or below this reads as collapse: the groups' reward distributions are nearly alike."""

SEPARATED_AT_LEAST = 0.6
"""A collapse index at or above this reads as separated: the groups are most of the way to their targets."""

AT_COLLAPSE_POINT_AT_MOST = 0.1
"""A distance to the collapse point at or below this reads as "at its collapse point": half the distance between
the open (``-1/x``) and closed (``x``) optima of 8 ranked answers (0.20), so nearer its own than to the other kind's."""

FAR_FROM_COLLAPSE_POINT_AT_LEAST = 0.2
"""A distance to the collapse point at or above this reads as "far from its collapse point": as far as the open and
closed optima of 8 answers are from each other (0.20; evenly spread rewards are 0.21 from ``x``'s optimum)."""


GROUP_UTILITIES = {"open": OPEN_UTILITY, "closed": CLOSED_UTILITY}
"""The prompt-aware utility of each group, whose optimal rewards are the group's target."""

MIN_ANSWERS = 4
"""Answers a prompt needs for the label-free measures (and the collapse index's targets to differ)."""

ONE_SHAPE_QUANTILE = 0.95
"""A shape spread above this quantile of its value under collapse reads as "shapes differ"."""


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


def optimum_verdict(distance: float) -> str:
    """``"at its collapse point"`` (distance <= 0.1), ``"far from its collapse point"`` (>= 0.2) or ``"near ..."``.

    Examples
    --------
    >>> optimum_verdict(0.05), optimum_verdict(0.15), optimum_verdict(0.25)
    ('at its collapse point', 'near its collapse point', 'far from its collapse point')
    """
    if distance <= AT_COLLAPSE_POINT_AT_MOST:
        return "at its collapse point"
    if distance >= FAR_FROM_COLLAPSE_POINT_AT_LEAST:
        return "far from its collapse point"
    return "near its collapse point"


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


def polarisation(rewards) -> np.ndarray:
    r"""Each prompt's polarisation :math:`\operatorname{mean}_k |2\tilde r_{b,k} - 1|` of its rescaled rewards.

    1 when every reward sits at its prompt's minimum or maximum (the optimum of ``x``), about 1/2 when they spread
    evenly (the optimum of ``-1/x``), 0 when all are equal.

    Examples
    --------
    >>> polarisation([[0.0, 0.0, 1.0, 1.0], [0.0, 1 / 3, 2 / 3, 1.0]]).round(3)
    array([1.   , 0.667])
    """
    return np.array([np.mean(np.abs(2 * r - 1)) if r.max() > r.min() else 0.0 for r in rescale_per_prompt(rewards)])


def _split_distance(shapes: list[np.ndarray]) -> float:
    """W1 between the pooled values of the less and the more polarised half of ``shapes`` ((prompts, n) arrays)."""
    polar = np.concatenate([np.abs(2 * m - 1).mean(axis=1) for m in shapes])
    low = np.zeros(polar.size, dtype=bool)
    low[np.argsort(polar, kind="stable")[: polar.size // 2]] = True
    sizes = np.cumsum([0] + [len(m) for m in shapes])
    parts = [
        (m[low[start:stop]], m[~low[start:stop]]) for m, start, stop in zip(shapes, sizes[:-1], sizes[1:], strict=True)
    ]
    lower = np.concatenate([part.ravel() for part, _ in parts])
    upper = np.concatenate([part.ravel() for _, part in parts])
    if lower.size == upper.size:  # the usual case; scipy's general W1 is several times slower on it
        return _equal_size_w1(lower, upper)
    return wasserstein_1(lower, upper)


def _equal_size_w1(a: np.ndarray, b: np.ndarray) -> float:
    """W1 of two samples of one size: the mean gap of their sorted values (what scipy computes, without its CDFs)."""
    return float(np.mean(np.abs(np.sort(a) - np.sort(b))))


def _shapes(rewards) -> list[np.ndarray]:
    """The prompts' sorted rescaled rewards, one ``(prompts, n)`` array per number of answers n."""
    by_size: dict[int, list[np.ndarray]] = {}
    for row in rescale_per_prompt(rewards):
        by_size.setdefault(row.size, []).append(np.sort(row))
    return [np.array(rows) for rows in by_size.values()]


def shape_spread(rewards) -> float:
    """How far apart the prompts' reward shapes are (module docstring): 0 when all prompts have one shape.

    Parameters
    ----------
    rewards : sequence of array_like
        One array of rewards per prompt (lengths may differ), at least 2 prompts; each is rescaled to [0, 1] first.

    Examples
    --------
    >>> even, extreme = [0.0, 1 / 3, 2 / 3, 1.0], [0.0, 0.0, 1.0, 1.0]
    >>> shape_spread([even, even, even, even])
    0.0
    >>> round(shape_spread([even, extreme, even, extreme]), 3)  # W1 of the two shapes
    0.167
    """
    if len(rewards) < 2:
        raise InputValueError(f"`rewards` must hold at least 2 prompts to compare their shapes, got {len(rewards)}")
    return _split_distance(_shapes(rewards))


def _spread_if_collapsed(shapes: list[np.ndarray], *, draws: int, seed: int) -> float:
    """Mean shape spread over ``draws`` shuffles of each order position's values across prompts of one size."""
    rng = np.random.default_rng(seed)
    return float(np.mean([_split_distance([rng.permuted(m, axis=0) for m in shapes]) for _ in range(draws)]))


def optimum_distances(rewards, optima) -> np.ndarray:
    """Each prompt's distance to its collapse point: W1 between its rescaled rewards and its exact optimum.

    Parameters
    ----------
    rewards, optima : sequence of array_like
        One array per prompt each: the model's rewards and the exact optimal rewards of the prompt's ranking under
        its utility (:func:`rewardcollapse.optimal_rewards`), of the same length.

    Examples
    --------
    >>> optimum_distances([[0.2, 0.9, 0.1, 0.8]], [[1.0, 1.0, 0.0, 0.0]]).round(4)
    array([0.0625])
    """
    if len(rewards) != len(optima):
        raise InputValueError(f"`rewards` has {len(rewards)} prompts but `optima` has {len(optima)}")
    out = np.empty(len(rewards))
    for b, (row, optimum) in enumerate(zip(rescale_per_prompt(rewards), optima, strict=True)):
        optimum = np.asarray(optimum, dtype=float)
        if optimum.shape != row.shape:
            raise InputValueError(f"prompt {b}: {row.size} rewards but an optimum of {optimum.size} values")
        out[b] = _equal_size_w1(row, optimum)
    return out


@dataclass(frozen=True)
class LabelFreeMeasures:
    """The label-free collapse measures of a set of prompts (module docstring); None where one cannot be given.

    ``why_not`` says, for each measure that is None, why in one line.
    """

    prompts: int
    """Prompts measured: those with at least :data:`MIN_ANSWERS` answers whose rewards are not all equal."""
    left_out_few_answers: int
    left_out_equal_rewards: int
    shape_spread: float | None
    shape_spread_if_collapsed: float | None
    shape_index: float | None
    optimum_distance: float | None
    """Mean over the prompts of the distance to their collapse point; None without optima."""
    why_not: dict[str, str]

    @property
    def verdict(self) -> str | None:
        """:func:`collapse_verdict` of the shape index; None when it is not measured."""
        return None if self.shape_index is None else collapse_verdict(self.shape_index)

    def to_dict(self) -> dict[str, Any]:
        """The measures and counts as JSON values, with the verdict."""
        from dataclasses import asdict

        return {**asdict(self), "verdict": self.verdict}


def label_free_measures(rewards, optima=None, *, draws: int = 100, seed: int = 0) -> LabelFreeMeasures:
    """Shape spread, its value under collapse, shape index and mean distance to the collapse point, without labels.

    Parameters
    ----------
    rewards : sequence of array_like
        One array of rewards per prompt (lengths may differ).
    optima : sequence of array_like, optional
        Each prompt's exact optimal rewards under its training utility; without them no distance is given.
    draws : int, default 100
        Shuffles for the spread under collapse (its standard error is under 1% of it at 100 on 100 prompts).
    seed : int, default 0
        Seeds the shuffles, so a measure is the same at every call.

    Returns
    -------
    LabelFreeMeasures
        With the prompts left out (fewer than 4 answers, or all rewards equal) counted, and a reason for each
        measure that cannot be given.

    Examples
    --------
    >>> even, extreme = [0.0, 1 / 3, 2 / 3, 1.0], [0.0, 0.0, 1.0, 1.0]
    >>> m = label_free_measures([even, extreme] * 20, [extreme] * 40)
    >>> round(m.shape_spread, 3), m.verdict, round(m.optimum_distance, 3)
    (0.167, 'separated', 0.083)
    """
    from rewardcollapse.core import optimal_rewards

    if optima is not None and len(optima) != len(rewards):
        raise InputValueError(f"`rewards` has {len(rewards)} prompts but `optima` has {len(optima)}")
    rows = [np.asarray(r, dtype=float) for r in rewards]
    few = [b for b, r in enumerate(rows) if r.size < MIN_ANSWERS]
    equal = [b for b, r in enumerate(rows) if r.size >= MIN_ANSWERS and r.max() == r.min()]
    kept = [b for b in range(len(rows)) if b not in set(few) | set(equal)]
    why: dict[str, str] = {}
    if not kept:
        counts = [f"{len(few)} have fewer than {MIN_ANSWERS} answers"] * bool(few)
        counts += [f"{len(equal)} have all rewards equal"] * bool(equal)
        reason = f"no prompt to measure: of {len(rows)} prompts, " + (" and ".join(counts) or "none were given")
        why = {"shape_spread": reason, "shape_index": reason, "optimum_distance": reason}
        return LabelFreeMeasures(0, len(few), len(equal), None, None, None, None, why)
    spread = collapsed = index = None
    if len(kept) >= 4:
        shapes = _shapes([rows[b] for b in kept])
        spread = _split_distance(shapes)
        collapsed = _spread_if_collapsed(shapes, draws=draws, seed=seed)
        n = int(np.median([rows[b].size for b in kept]))
        paper = [optimal_rewards(n, spec).rewards for spec in ("-1/x", "x")]  # the paper's open and closed optima
        reference = _shapes([paper[b % 2] for b in range(len(kept))])
        yardstick = _split_distance(reference) - _spread_if_collapsed(reference, draws=draws, seed=seed)
        index = round((spread - collapsed) / yardstick, 12)
    else:
        why["shape_spread"] = why["shape_index"] = (
            f"needs at least 4 prompts to split in halves, got {len(kept)} of at least {MIN_ANSWERS} answers whose "
            "rewards differ"
        )
    distance = None
    if optima is None:
        why["optimum_distance"] = "needs the training utility, whose exact optimum is each prompt's collapse point"
    else:
        distance = float(optimum_distances([rows[b] for b in kept], [optima[b] for b in kept]).mean())
    return LabelFreeMeasures(len(kept), len(few), len(equal), spread, collapsed, index, distance, why)


def level_label(openness: float) -> str:
    """The group label of an openness level: ``0.333...`` -> ``"o=0.333"``."""
    return f"o={openness:.3g}"


def targets_for(n: int = 8, levels: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Each group's target rewards: the exact optimum of ``n`` ranked answers under the group's utility.

    Without ``levels`` the groups are ``"open"`` (``-1/x``) and ``"closed"`` (``x``); with them, one group per level
    ``o`` (labelled by :func:`level_label`) whose utility is :func:`~rewardcollapse.openness_utility` ``(o)``.
    """
    from rewardcollapse.core import openness_utility, optimal_rewards

    if levels is None:
        return {group: optimal_rewards(n, spec).rewards for group, spec in GROUP_UTILITIES.items()}
    return {level_label(o): np.sort(optimal_rewards(n, openness_utility(o)).rewards) for o in levels}


def _ranking(row: Mapping[str, Any]) -> Any:
    """A row's ranking as :func:`~rewardcollapse.optimal_rewards` takes it: tiers from ``ranks``, or edges."""
    if row.get("pairs") is not None:
        return [tuple(edge) for edge in row["pairs"]]
    ranks = row.get("ranks") or list(range(len(row["responses"])))
    return [[i for i, r in enumerate(ranks) if r == value] for value in sorted(set(ranks))]


def prompt_optima(rows: Sequence[Mapping[str, Any]], utility: str) -> list[np.ndarray]:
    """Each ranking row's collapse point: the exact optimal rewards of its ranking under its utility.

    ``rows`` are canonical ranking rows (``responses`` with ``ranks`` or ``pairs``); ``utility`` is a spec (every
    row's utility), ``"prompt-aware"`` (each row's ``utility`` field, else ``-1/x`` for open and ``x`` for closed
    rows by their ``openness``) or ``"openness"`` (each row's :func:`~rewardcollapse.openness_utility`). Rows with
    the same ranking and utility share one solve.

    Raises
    ------
    ValueError
        For a per-prompt utility on a row without the ``openness`` (or ``utility``) it needs, naming the row.
    """
    from rewardcollapse.core import openness_utility, optimal_rewards

    cache: dict[tuple[str, str], np.ndarray] = {}
    out = []
    for index, row in enumerate(rows):
        if utility == OPENNESS:
            if row.get("openness") is None:
                raise InputValueError(f"row {index} has no `openness`, which the utility 'openness' needs")
            spec = openness_utility(row["openness"])
        else:
            spec = prompt_utility(row, utility)
        ranking = _ranking(row)
        key = (getattr(spec, "name", str(spec)), json.dumps(ranking))
        if key not in cache:
            cache[key] = optimal_rewards(ranking, spec).rewards
        out.append(cache[key])
    return out


@dataclass(frozen=True)
class RankedMeasures:
    """Collapse measures of scored ranking rows: label-free, and with openness labels the collapse index too.

    :meth:`metrics` flattens them under names that group together in TensorBoard, Weights & Biases or MLflow.
    """

    label_free: LabelFreeMeasures
    collapse_index: float | None
    """Between the openness groups (open/closed or levels); None without labels (``why_not`` says why)."""
    groups: dict[str, dict[str, float]]
    """Per group: prompts, KS and W1 distance to its target, pairwise accuracy and Kendall tau (with labels)."""
    pairwise_accuracy: float
    """Over all ranked pairs of the measured rows, a tie counting one half."""
    why_not: dict[str, str]
    """Why the collapse index (``"collapse_index"``) is not given, when it is not."""

    @property
    def verdict(self) -> str | None:
        """:func:`collapse_verdict` of the collapse index; None without it."""
        return None if self.collapse_index is None else collapse_verdict(self.collapse_index)

    def metrics(self, prefix: str = "collapse/") -> dict[str, float]:
        """The measures given, as ``{prefix + name: value}``.

        The names: ``index``, ``shape_index``, ``shape_spread``, ``shape_spread_if_collapsed``, ``optimum_distance``,
        ``pairwise_accuracy`` and per group ``wasserstein_<group>``.
        """
        free = self.label_free
        values = {
            "index": self.collapse_index,
            "shape_index": free.shape_index,
            "shape_spread": free.shape_spread,
            "shape_spread_if_collapsed": free.shape_spread_if_collapsed,
            "optimum_distance": free.optimum_distance,
            "pairwise_accuracy": self.pairwise_accuracy,
            **{f"wasserstein_{group}": entry["wasserstein"] for group, entry in self.groups.items()},
        }
        return {prefix + name: float(value) for name, value in values.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """Every measure and reason as JSON values."""
        return {
            "collapse_index": self.collapse_index,
            "verdict": self.verdict,
            "groups": self.groups,
            "pairwise_accuracy": self.pairwise_accuracy,
            "label_free": self.label_free.to_dict(),
            "why_not": {**self.label_free.why_not, **self.why_not},
        }


def measure_ranked(
    rows: Sequence[Mapping[str, Any]],
    rewards,
    *,
    utility: str | None = None,
    levels: Sequence[float] | None = None,
    draws: int = 100,
) -> RankedMeasures:
    """Every collapse measure that scored ranking rows allow, with the reason for each that they do not.

    Parameters
    ----------
    rows : sequence of mapping
        Canonical ranking rows (``responses`` with ``ranks`` or ``pairs``; ``openness`` where known).
    rewards : sequence of array_like
        Each row's rewards, one per response (raw scores or normalised: each prompt is rescaled).
    utility : str, optional
        The training utility (a spec, ``"prompt-aware"`` or ``"openness"``), whose exact optimum is each prompt's
        collapse point; None: no distance to it. A per-prompt utility on rows without openness gives no distance.
    levels : sequence of float, optional
        Group by these openness levels instead of open (>= 0.5) and closed.
    draws : int, default 100
        Shuffles for the shape spread under collapse (:func:`label_free_measures`).

    Returns
    -------
    RankedMeasures
        The label-free measures always (with reasons where a prompt set cannot give them); the collapse index and
        per-group distances when every row has an openness and the groups' targets differ.
    """
    if len(rows) != len(rewards):
        raise InputValueError(f"`rows` has {len(rows)} rows but `rewards` has {len(rewards)}")
    from rewardcollapse.data.schema import ranked_pairs

    rewards = [np.asarray(r, dtype=float) for r in rewards]
    optima, why = None, {}
    if utility is not None:
        try:
            optima = prompt_optima(rows, utility)
        except ValueError as error:
            lacking = sum(
                row.get("openness") is None and (utility == OPENNESS or row.get("utility") is None) for row in rows
            )
            why["optimum_distance"] = (
                f"the utility {utility!r} needs each row's openness to set its collapse point, and {lacking} of "
                f"{len(rows)} rows have none: give a fixed utility, or estimate it with `rewardcollapse openness` "
                "(docs/openness.md)"
                if lacking
                else f"the utility {utility!r} gives these rankings no collapse point: {error}"
            )
    free = label_free_measures(rewards, optima, draws=draws)
    if optima is None and utility is not None:
        free = dataclasses.replace(free, why_not={**free.why_not, **why})
    pairs = [ranked_pairs(row) for row in rows]
    width = max(len(r) for r in rewards)
    matrix = np.full((len(rows), width), np.nan)
    above = np.zeros((len(rows), width, width), dtype=bool)
    for b, (r, p) in enumerate(zip(rewards, pairs, strict=True)):
        matrix[b, : r.size] = r
        above[b, : r.size, : r.size] = p
    accuracy = ranking_metrics(matrix, above)["pairwise_accuracy"]
    index, groups, why_index = _labelled(rows, rewards, pairs, levels)
    return RankedMeasures(free, index, groups, accuracy, why_index)


def _labelled(rows, rewards, pairs, levels) -> tuple[float | None, dict[str, dict[str, float]], dict[str, str]]:
    """The collapse index and per-group diagnostics where the rows' openness allows them, else why not."""
    unlabelled = sum(row.get("openness") is None for row in rows)
    if unlabelled:
        fix = "label them, or estimate it with `rewardcollapse openness` (docs/openness.md)"
        return (
            None,
            {},
            {"collapse_index": f"{unlabelled} of {len(rows)} rows have no `openness`: {fix}"},
        )
    if levels is None:
        groups = ["open" if is_open(row["openness"]) else "closed" for row in rows]
    else:
        labels = {level_label(o): o for o in levels}
        groups = []
        for index, row in enumerate(rows):
            matches = [label for label, o in labels.items() if abs(o - row["openness"]) <= 1e-9]
            if not matches:
                return (
                    None,
                    {},
                    {"collapse_index": f"row {index} has openness {row['openness']}, at none of the levels"},
                )
            groups.append(matches[0])
    if len(set(groups)) < 2:
        only = f"every prompt is in the group {groups[0]!r}"
        return None, {}, {"collapse_index": f"{only}: the collapse index compares groups, so it needs two or more"}
    targets = targets_for(int(np.median([r.size for r in rewards])), levels)
    try:
        index = collapse_index(rewards, groups, targets)
    except InputValueError as error:
        return None, {}, {"collapse_index": str(error)}
    measured = group_diagnostics(rewards, groups, targets, pairs)
    return index, {group: measured[group] for group in targets if group in measured}, {}
