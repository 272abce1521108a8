r"""How well a reward model's scores respect the rankings, and how its rewards are spread.

For prompts :math:`b` with rewards :math:`r_{b,k}` and ranked pairs :math:`P_b = \{(i, j): i \succ j\}`:

* pairwise accuracy: the share of all ranked pairs with :math:`r_i > r_j`, a tie counting one half;
* Kendall tau of a prompt: :math:`(C_b - D_b) / |P_b|` with :math:`C_b` (:math:`D_b`) the ranked pairs scored in
  (against) their order. On a strict total order with distinct rewards this is Kendall's :math:`\tau`; on ties and
  partial orders it counts only the pairs the data ranks;
* reward mean and standard deviation over all answers, and the spread: the mean over prompts of
  :math:`\max_k r_{b,k} - \min_k r_{b,k}`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ranking_metrics"]


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
        raise ValueError(f"`rewards` must be (P, K) and `pairs` (P, K, K), got {rewards.shape} and {pairs.shape}")
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
