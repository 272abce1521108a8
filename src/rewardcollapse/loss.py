r"""The listwise ranking loss of a reward model, with one utility per prompt if wanted.

A batch holds ``B`` prompts with up to ``K`` answers each, scored once: ``rewards`` has shape ``(B, K)``. With
:math:`s = \sigma(R)` (``normalize="sigmoid"``, the paper's setting) or :math:`s = R` (``normalize="none"``), the loss
of prompt :math:`b` is minus the mean over its ranked pairs :math:`P_b = \{(i, j) : i \succ j\}` of the utility
:math:`U_b` of the score gap,

.. math::

    \ell_b = -\frac{1}{|P_b|} \sum_{(i, j) \in P_b} U_{b,\varepsilon}(s_{b,i} - s_{b,j}),

and the batch loss is the mean of :math:`\ell_b` over the prompts that have at least one ranked pair (Song et al.,
2023, Section 3, maximise :math:`\sum U`). :math:`U_\varepsilon` is the whole-line extension of
:mod:`rewardcollapse.core.utilities`; ``eps`` shifts only the utilities that are :math:`-\infty` or infinitely steep
at 0 (``log``, ``x^a``, ``-x^-a``, ``-1/x``), while ``x`` and ``logsigmoid`` are finite everywhere and are used as
they are. So with ``K = 2``, ``utility="logsigmoid"`` and ``normalize="none"`` the loss is exactly the Bradley-Terry
loss :math:`-\log\sigma(R_\text{chosen} - R_\text{rejected})` of TRL's ``RewardTrainer``.

Every pair of a prompt is formed from the ``K`` scores, so ``K`` answers cost ``K`` forward passes, not the
:math:`K(K-1)` of feeding each pair's two sequences. The loss is vectorised over the ``(B, K, K)`` matrix of score
gaps, with no Python loop over pairs or prompts and no host-device synchronisation; each distinct utility of a
per-prompt list is evaluated once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any, get_args

import torch
from torch import nn

from rewardcollapse.core.conventions import Normalization, PairWeighting
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.core.openness import openness_family
from rewardcollapse.core.utilities import Utility, utility

__all__ = [
    "PAIR_WEIGHTINGS",
    "PARAMETER_FAMILIES",
    "RankingLoss",
    "centering_penalty",
    "loss_items",
    "pair_matrix",
    "ranking_loss",
]

PARAMETER_FAMILIES = {"x^a": "a", "-x^-a": "a", "logsigmoid": "scale", "openness": "o"}
"""Families whose parameter may vary per prompt: ``utilities`` is then a ``(B,)`` tensor of that parameter.

``"openness"`` is the continuous prompt-aware family of :mod:`rewardcollapse.core.openness`: one openness o in
[0, 1] per prompt, U_o(x) = (x^(1-2o) - 1) / (1-2o), from ``x`` (closed, o = 0) to ``-1/x`` (open, o = 1).
"""

_REDUCTIONS = ("mean", "sum", "none")
PAIR_WEIGHTINGS = get_args(PairWeighting)
"""How :func:`ranking_loss` weighs a batch: each prompt the same, or each ranked pair the same (TRL)."""
_WHOLE_LINE_FAMILIES = ("x", "logsigmoid")


@functools.lru_cache(maxsize=256)
def _utility_from_spec(spec: str, eps: float) -> Utility:
    base = utility(spec)
    if base.family in _WHOLE_LINE_FAMILIES:
        return base
    if eps <= 0:
        raise InputValueError(
            f"`eps` must be > 0 for utility {spec!r} (it is -inf or infinitely steep at 0, so one misordered pair "
            f"would make the loss infinite), got {eps}; the paper uses eps=0.1"
        )
    return utility(base, eps=eps)


def _resolve(spec: str | Utility, eps: float) -> Utility:
    """A spec string gets the loss's ``eps`` when its family needs it; a Utility object is used as built."""
    if isinstance(spec, Utility):
        return spec
    if not isinstance(spec, str):
        raise InputTypeError(f"each utility must be a spec string or a Utility, got {type(spec).__name__}")
    return _utility_from_spec(spec, float(eps))


def pair_matrix(ranks: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Return the ``(B, K, K)`` bool matrix of ranked pairs: entry ``(b, i, j)`` is True when ``i`` is above ``j``.

    Parameters
    ----------
    ranks : torch.Tensor
        ``(B, K)`` integer ranks, lower is better; equal ranks are tied and form no pair.
    mask : torch.Tensor, optional
        ``(B, K)`` bool, False for padding answers (prompts with fewer than ``K`` answers).

    Examples
    --------
    >>> pair_matrix(torch.tensor([[0, 1, 1]])).int()
    tensor([[[0, 1, 1],
             [0, 0, 0],
             [0, 0, 0]]], dtype=torch.int32)
    """
    above = ranks[:, :, None] < ranks[:, None, :]
    if mask is not None:
        above = above & mask[:, :, None] & mask[:, None, :]
    return above


def loss_items(
    pairs: torch.Tensor, *, mask: torch.Tensor | None = None, pair_weighting: PairWeighting = "prompt"
) -> torch.Tensor:
    r"""How many terms the batch's mean loss averages: ranked pairs (``"pair"``) or prompts with a pair (``"prompt"``).

    :func:`ranking_loss` and :func:`centering_penalty` with ``reduction="mean"`` divide their ``"sum"`` by this
    count (at least 1). Summed over the micro-batches of a gradient-accumulation step and over the processes of
    data-parallel training, it is the divisor that makes the step's loss the mean over the whole global batch,
    however its pairs and prompts are split (transformers' ``num_items_in_batch``).

    Parameters
    ----------
    pairs : torch.Tensor
        ``(B, K, K)`` bool, True where answer ``i`` is ranked above ``j`` (:func:`pair_matrix`).
    mask : torch.Tensor, optional
        ``(B, K)`` bool, False for padding answers.
    pair_weighting : {"prompt", "pair"}, default "prompt"
        As in :func:`ranking_loss`.

    Returns
    -------
    torch.Tensor
        A 0-dimensional integer tensor.

    Examples
    --------
    >>> pairs = pair_matrix(torch.tensor([[0, 1, 2], [0, 1, 1]]))
    >>> int(loss_items(pairs, pair_weighting="pair")), int(loss_items(pairs, pair_weighting="prompt"))
    (5, 2)
    """
    if pair_weighting not in PAIR_WEIGHTINGS:
        raise InputValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS}, got {pair_weighting!r}")
    above = pairs if mask is None else pairs & mask[:, :, None] & mask[:, None, :]
    count = above.sum(dim=(1, 2))
    return count.sum() if pair_weighting == "pair" else (count > 0).sum()


def _check_inputs(rewards, ranks, pairs, mask) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(rewards, torch.Tensor) or rewards.ndim != 2:
        got = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise InputValueError(f"`rewards` must be a (batch, K) tensor of scores, got {got}")
    batch, k = rewards.shape
    if mask is not None:
        if tuple(mask.shape) != (batch, k) or mask.dtype != torch.bool:
            got = f"{mask.dtype} {tuple(mask.shape)}"
            raise InputValueError(f"`mask` must be a bool tensor of shape {(batch, k)}, got {got}")
    if ranks is not None and pairs is not None:
        raise InputValueError("give `ranks` or `pairs`, not both")
    if pairs is not None:
        if tuple(pairs.shape) != (batch, k, k) or pairs.dtype != torch.bool:
            raise InputValueError(
                f"`pairs` must be a bool tensor of shape {(batch, k, k)} (i above j), "
                f"got {pairs.dtype} {tuple(pairs.shape)}"
            )
        above = pairs if mask is None else pairs & mask[:, :, None] & mask[:, None, :]
        return rewards, above
    if ranks is None:
        # Column order is the ranking: answer 0 best.
        ranks = torch.arange(k, device=rewards.device).expand(batch, k)
    elif tuple(ranks.shape) != (batch, k) or ranks.is_floating_point() or ranks.dtype == torch.bool:
        got = f"{ranks.dtype} {tuple(ranks.shape)}"
        raise InputValueError(f"`ranks` must be an integer tensor of shape {(batch, k)}, got {got}")
    return rewards, pair_matrix(ranks, mask)


def _parameter_utility(family: str, values: torch.Tensor, batch: int, eps: float) -> tuple[Utility, torch.Tensor]:
    """The family's Utility with a placeholder parameter, and the validated per-prompt parameter tensor."""
    if family not in PARAMETER_FAMILIES:
        known = ", ".join(repr(f) for f in PARAMETER_FAMILIES)
        raise InputValueError(f"`family` must be one of {known} when `utilities` is a tensor, got {family!r}")
    if values.ndim != 1 or values.shape[0] != batch or not values.is_floating_point():
        raise InputValueError(
            f"a tensor `utilities` must be a float tensor of shape ({batch},), one {PARAMETER_FAMILIES[family]} per "
            f"prompt, got {values.dtype} {tuple(values.shape)}"
        )
    inside = {
        "x^a": lambda v: (v > 0) & (v < 1),
        "-x^-a": lambda v: (v > 0) & (v <= 1),
        "logsigmoid": lambda v: v > 0,
        "openness": lambda v: (v >= 0) & (v <= 1),
    }[family](values)
    if not bool(inside.all()):
        bad = values[~inside][0].item()
        interval = {"x^a": "(0, 1)", "-x^-a": "(0, 1]", "logsigmoid": "(0, inf)", "openness": "[0, 1]"}[family]
        raise InputValueError(f"per-prompt `utilities` values for {family!r} must lie in {interval}, got {bad}")
    if family == "openness":
        if eps <= 0:
            raise InputValueError(f"`eps` must be > 0 for the openness family (its open end is -1/x), got {eps}")
        return openness_family(0.5, eps=float(eps)), values
    placeholder = {"x^a": "x^0.5", "-x^-a": "-x^-0.5", "logsigmoid": "logsigmoid"}[family]
    return _resolve(placeholder, eps), values


def _one_utility(spec: Any, gaps: torch.Tensor, eps: float) -> torch.Tensor:
    """``U(gap)`` on the ``(B, K, K)`` gap matrix, one utility (a spec or a Utility) for every prompt."""
    if not isinstance(spec, str | Utility):
        hint = "; give one per prompt as `utilities`" if isinstance(spec, Sequence | torch.Tensor) else ""
        raise InputTypeError(f"`utility` must be a spec string or a Utility, got {type(spec).__name__}{hint}")
    return _resolve(spec, eps)(gaps)


def _per_prompt_utilities(utilities: Any, family: str | None, gaps: torch.Tensor, eps: float) -> torch.Tensor:
    """``U_b(gap)`` on the ``(B, K, K)`` gap matrix, each prompt's rows under its own utility."""
    batch = gaps.shape[0]
    if isinstance(utilities, torch.Tensor):
        if family is None:
            raise InputValueError("a tensor `utilities` needs `family`, e.g. family='x^a' with one exponent per prompt")
        base, values = _parameter_utility(family, utilities, batch, eps)
        per_prompt = values.to(device=gaps.device, dtype=gaps.dtype)[:, None, None]  # broadcasts over (K, K)
        return dataclasses.replace(base, params={PARAMETER_FAMILIES[family]: per_prompt})(gaps)
    if family is not None:
        raise InputValueError("`family` is only used with a per-prompt tensor `utilities`")
    if isinstance(utilities, str | Utility) or not isinstance(utilities, Sequence):
        raise InputTypeError(
            f"`utilities` must be a sequence of one spec or Utility per prompt or a (batch,) tensor, got "
            f"{type(utilities).__name__}; give one utility for every prompt as `utility`"
        )
    if len(utilities) != batch:
        raise InputValueError(
            f"`utilities` has {len(utilities)} entries but the batch has {batch} prompts; give one per prompt"
        )
    # One evaluation per distinct utility over the whole (small) gap matrix, selected per prompt. Spec strings
    # resolve to cached Utility objects, so identity groups equal specs.
    distinct: dict[int, tuple[list[int], Utility]] = {}
    for b, spec in enumerate(utilities):
        u = _resolve(spec, eps)
        distinct.setdefault(id(u), ([], u))[0].append(b)
    values = None
    for prompts, u in distinct.values():
        if values is None:
            values = u(gaps)  # the first utility fills every row; later ones overwrite their prompts
            continue
        chosen = torch.zeros(batch, 1, 1, dtype=torch.bool)
        chosen[prompts] = True
        values = torch.where(chosen.to(gaps.device), u(gaps), values)
    return values


def ranking_loss(
    rewards: torch.Tensor,
    *,
    utility: str | Utility | None = None,
    utilities: Sequence[str | Utility] | torch.Tensor | None = None,
    ranks: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    pairs: torch.Tensor | None = None,
    family: str | None = None,
    normalize: Normalization = "sigmoid",
    eps: float = 0.1,
    reduction: str = "mean",
    margins: torch.Tensor | None = None,
    pair_weighting: PairWeighting = "prompt",
) -> torch.Tensor:
    r"""Listwise ranking loss: minus the mean over prompts of the mean utility of their ranked pairs' score gaps.

    Parameters
    ----------
    rewards : torch.Tensor
        ``(B, K)`` raw reward-model scores, one per answer.
    utility : str or Utility, optional
        One utility for every prompt: a spec (``"log"``, ``"x"``, ``"-1/x"``, ``"x^0.5"``, ``"logsigmoid"``) or a
        :class:`~rewardcollapse.Utility`. Give this or ``utilities``.
    utilities : sequence or torch.Tensor, optional
        One utility per prompt: a sequence of ``B`` specs or Utility objects (prompt-aware training, e.g. ``"x"``
        for closed prompts and ``"-1/x"`` for open ones), or a ``(B,)`` float tensor of the parameter of
        ``family``, one per prompt.
    ranks : torch.Tensor, optional
        ``(B, K)`` integer ranks, lower is better, equal ranks tied (no pair between them). Default: column order,
        answer 0 best.
    mask : torch.Tensor, optional
        ``(B, K)`` bool, False for padding answers of prompts with fewer than ``K`` answers.
    pairs : torch.Tensor, optional
        ``(B, K, K)`` bool, True where answer ``i`` is ranked above ``j``: a partial order, instead of ``ranks``.
    family : str, optional
        With a tensor ``utilities``: ``"x^a"`` or ``"-x^-a"`` (per-prompt exponent ``a``), ``"logsigmoid"``
        (per-prompt ``scale``), or ``"openness"`` (per-prompt openness in [0, 1], the continuous prompt-aware
        family, evaluated for all prompts at once with no grouping by value).
    normalize : {"sigmoid", "none"}, default "sigmoid"
        Squash the scores to :math:`[0, 1]` with the sigmoid first (the paper), or use them raw (``"none"``).
    eps : float, default 0.1
        Shift :math:`\varepsilon > 0` of the utilities that are singular at 0 (module docstring); spec strings
        only, a Utility object keeps its own.
    reduction : {"mean", "sum", "none"}, default "mean"
        Mean or sum over the prompts that have a ranked pair (over the pairs with ``pair_weighting="pair"``), or
        the ``(B,)`` per-prompt losses (0 for prompts without a pair). The mean is the sum divided by
        :func:`loss_items`.
    margins : torch.Tensor, optional
        ``(B, K, K)`` margin of each ranked pair, subtracted from its gap: :math:`U(s_i - s_j - m_{ij})`. With
        ``"logsigmoid"`` and ``normalize="none"`` this is TRL's ``-logsigmoid(r_chosen - r_rejected - margin)``.
    pair_weighting : {"prompt", "pair"}, default "prompt"
        ``"prompt"``: each prompt weighs the same (the mean over prompts of the mean over their pairs);
        ``"pair"``: each ranked pair of the batch weighs the same (the mean over all pairs, TRL's mean over rows).
        The two agree when every prompt has one pair. ``reduction="sum"`` sums over pairs with ``"pair"``.

    Returns
    -------
    torch.Tensor
        A float32 (or float64, for float64 rewards) scalar, or ``(B,)`` for ``reduction="none"``.

    Raises
    ------
    ValueError
        For shapes that do not match, an unknown ``normalize`` or ``reduction``, both or neither of ``utility``
        and ``utilities``, a per-prompt list of the wrong length, parameters out of range, or ``eps <= 0`` with a
        singular utility.
    TypeError
        For a ``utility`` or ``utilities`` of the wrong type.

    Examples
    --------
    >>> r = torch.tensor([[2.0, 0.0], [0.5, 1.0]])
    >>> bt = ranking_loss(r, utility="logsigmoid", normalize="none")
    >>> torch.allclose(bt, -torch.nn.functional.logsigmoid(r[:, 0] - r[:, 1]).mean())
    True
    >>> ranking_loss(r, utilities=["x", "-1/x"], ranks=torch.tensor([[0, 1], [0, 0]]), reduction="none")
    tensor([-0.3808,  0.0000])
    """
    if normalize not in get_args(Normalization):
        hint = "; write 'none' for raw scores" if normalize is None else ""
        raise InputValueError(f"`normalize` must be 'sigmoid' or 'none', got {normalize!r}{hint}")
    if reduction not in _REDUCTIONS:
        raise InputValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}")
    if pair_weighting not in PAIR_WEIGHTINGS:
        raise InputValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS}, got {pair_weighting!r}")
    if (utility is None) == (utilities is None):
        given = "both" if utility is not None else "neither"
        raise InputValueError(f"give `utility` (one for every prompt) or `utilities` (one per prompt), got {given}")
    if family is not None and utilities is None:
        raise InputValueError("`family` is only used with a per-prompt tensor `utilities`")
    rewards, above = _check_inputs(rewards, ranks, pairs, mask)
    if margins is not None and margins.shape != above.shape:
        raise InputValueError(f"`margins` must have shape {tuple(above.shape)} (B, K, K), got {tuple(margins.shape)}")
    # Scores in at least float32: bf16 autocast logits have 3 significant digits, too few for the gaps.
    scores = rewards.float() if rewards.dtype in (torch.float16, torch.bfloat16) else rewards
    if normalize == "sigmoid":
        scores = torch.sigmoid(scores)
    # Dense (B, K, K) gaps: K is small, and no gather or nonzero means no host-device synchronisation. Entries
    # that are not ranked pairs get the harmless gap 1 (U finite there, so no NaN reaches the gradient) and are
    # dropped by the `where`.
    gaps = scores[:, :, None] - scores[:, None, :]
    if margins is not None:
        gaps = gaps - margins.to(gaps.dtype)
    safe = torch.where(above, gaps, 1.0)
    if utility is not None:
        pair_utilities = _one_utility(utility, safe, eps)
    else:
        pair_utilities = _per_prompt_utilities(utilities, family, safe, eps)
    per_prompt = torch.where(above, -pair_utilities, 0.0).sum(dim=(1, 2))
    if pair_weighting == "prompt":  # each prompt's mean over its pairs; 0 for a prompt without a pair
        per_prompt = per_prompt / above.sum(dim=(1, 2)).clamp_min(1).to(scores.dtype)
    if reduction == "none":
        return per_prompt
    total = per_prompt.sum()
    if reduction == "sum":
        return total
    # Mean over the pairs, or the prompts that have one; an all-tied batch gives 0 that still reaches every score.
    return total / loss_items(above, pair_weighting=pair_weighting).clamp_min(1).to(scores.dtype)


def centering_penalty(
    rewards: torch.Tensor, pairs: torch.Tensor, *, pair_weighting: PairWeighting = "prompt", reduction: str = "mean"
) -> torch.Tensor:
    r"""Mean over ranked pairs of :math:`(r_i + r_j)^2` on the raw scores: TRL's ``center_rewards_coefficient`` term.

    It pulls the rewards toward zero mean (Eisenstein et al., 2023); with one pair per prompt it is TRL's
    ``mean((r_chosen + r_rejected) ** 2)``. ``pair_weighting`` as in :func:`ranking_loss`; ``reduction="sum"``
    leaves out the division by :func:`loss_items`, the same divisor as the ranking loss's.
    """
    if reduction not in ("mean", "sum"):
        raise InputValueError(f"`reduction` must be 'mean' or 'sum', got {reduction!r}")
    if pair_weighting not in PAIR_WEIGHTINGS:
        raise InputValueError(f"`pair_weighting` must be one of {PAIR_WEIGHTINGS}, got {pair_weighting!r}")
    sums = (rewards.float()[:, :, None] + rewards.float()[:, None, :]) ** 2
    per_prompt = torch.where(pairs, sums, 0.0).sum(dim=(1, 2))
    if pair_weighting == "prompt":
        per_prompt = per_prompt / pairs.sum(dim=(1, 2)).clamp_min(1)
    total = per_prompt.sum()
    return total if reduction == "sum" else total / loss_items(pairs, pair_weighting=pair_weighting).clamp_min(1)


class RankingLoss(nn.Module):
    """:func:`ranking_loss` as an ``nn.Module``; the fixed settings are given once, the batch at each call.

    Parameters
    ----------
    utility : str or Utility, default "log"
        The utility of every prompt, used when a call gives no per-prompt ``utilities`` (see :func:`ranking_loss`).
    family, normalize, eps, reduction, pair_weighting
        As in :func:`ranking_loss`.

    Examples
    --------
    >>> loss = RankingLoss("x", normalize="none")
    >>> loss(torch.tensor([[1.0, 0.0, -1.0]]))
    tensor(-1.3333)
    """

    def __init__(
        self,
        utility: str | Utility = "log",
        *,
        family: str | None = None,
        normalize: Normalization = "sigmoid",
        eps: float = 0.1,
        reduction: str = "mean",
        pair_weighting: PairWeighting = "prompt",
    ) -> None:
        super().__init__()
        self.utility = utility
        self.family = family
        self.normalize = normalize
        self.eps = eps
        self.reduction = reduction
        self.pair_weighting = pair_weighting

    def forward(
        self,
        rewards: torch.Tensor,
        ranks: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        pairs: torch.Tensor | None = None,
        utilities: Sequence[str | Utility] | torch.Tensor | None = None,
        margins: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the loss of one batch; per-prompt ``utilities`` replace the module's ``utility`` for it."""
        return ranking_loss(
            rewards,
            utility=self.utility if utilities is None else None,
            utilities=utilities,
            ranks=ranks,
            mask=mask,
            pairs=pairs,
            family=self.family,
            normalize=self.normalize,
            eps=self.eps,
            reduction=self.reduction,
            margins=margins,
            pair_weighting=self.pair_weighting,
        )

    def extra_repr(self) -> str:
        """The settings, shown in the module's repr."""
        return (
            f"utility={self.utility!r}, normalize={self.normalize!r}, eps={self.eps}, reduction={self.reduction!r}, "
            f"pair_weighting={self.pair_weighting!r}"
        )
