"""One forward pass per answer: run a collated batch through the model and put the scores in a (B, K) matrix."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from rewardcollapse.training.precision import Precision, score_head_in_float32
from rewardcollapse.training.shared_prompt import SharedPromptStats, score_shared, unwrapped_model

__all__ = ["MODEL_INPUTS", "SCORING_CHUNK", "SharedLayout", "score_batch", "score_rankings", "truncation_by_prompt"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

SCORING_CHUNK = 16
"""Sequences per forward pass when scoring without gradients. 16 prompts of 8 answers (the demo's test prompts,
MiniLM, float32, 2 threads, quiet machine): 1.09 s in passes of 16 against 2.29 s in one pass, 1.29 s in passes of
32 and 1.74 s of 64 (AVX-512; 1.13 s against 2.23 s with the kernels capped at AVX2): one pass pads every answer to
the batch's longest."""


@dataclass(frozen=True)
class SharedLayout:
    """Use the shared-prompt layout: rows of at most ``row_tokens`` tokens, counting tokens into ``stats``.

    ``when_cheaper``: only for batches where it costs fewer multiply-adds than separate sequences (``auto``);
    otherwise for every batch (``on``). ``method``: ``"auto"``, ``"cache"`` or ``"rows"``
    (:func:`~rewardcollapse.training.shared_prompt.score_shared`).
    """

    row_tokens: int = 4096
    stats: SharedPromptStats = field(default_factory=SharedPromptStats)
    when_cheaper: bool = False
    method: str = "auto"


@functools.cache
def _takes_use_cache(model_class: type) -> bool:
    """Whether a model class's forward names ``use_cache`` (decoders): scoring passes False, as TRL does."""
    return "use_cache" in inspect.signature(model_class.forward).parameters


def score_batch(
    model: torch.nn.Module,
    batch: Mapping[str, Any],
    *,
    forward_batch_size: int | None = None,
    shared: SharedLayout | None = None,
):
    """Score every sequence of a :class:`RankingCollator` batch once and return the ``(B, K)`` reward matrix.

    Sequences are sorted by length and run in chunks of ``forward_batch_size`` (all at once when None), each
    chunk cut to its own longest sequence, so short answers do not pay for the padding of long ones. Padding
    answers of the matrix are 0; use ``batch["answer_mask"]``. With ``shared``, each prompt's shared prefix is
    encoded once for all its answers instead (:mod:`~rewardcollapse.training.shared_prompt`; causal models only).
    """
    if shared is not None:
        rewards = score_shared(
            model,
            batch,
            row_tokens=shared.row_tokens,
            stats=shared.stats,
            when_cheaper=shared.when_cheaper,
            method=shared.method,
        )
        if rewards is not None:
            return rewards  # else the layout would cost more than separate sequences here: run those
    mask = batch["answer_mask"]
    attention = batch["attention_mask"]
    order = torch.argsort(attention.sum(dim=1), descending=True)
    size = forward_batch_size or len(order)
    # A decoder left to its config would fill a key/value cache in every forward (copies kept for nothing).
    no_cache = {"use_cache": False} if _takes_use_cache(type(unwrapped_model(model))) else {}
    flat = None
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        # Columns where some sequence of the chunk has a token: the chunk's own padding width, either side.
        columns = attention[chunk].any(dim=0)
        inputs = {name: batch[name][chunk][:, columns] for name in MODEL_INPUTS if name in batch}
        scores = model(**inputs, **no_cache).logits[:, 0]  # (chunk,)
        if flat is None:
            flat = scores.new_zeros(mask.numel())
        flat = flat.index_put((batch["answer_slot"][chunk],), scores)
    return flat.view(mask.shape)


def score_rankings(
    model: torch.nn.Module,
    collator: Any,
    dataset: Any,
    *,
    batch_size: int = 8,
    forward_batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: Precision | None = None,
    progress: bool = True,
    description: str = "scoring",
    shared: SharedLayout | None = None,
) -> Iterator[list[float]]:
    """Yield each row's raw rewards (one per response, in the row's order), scoring in batches of prompts.

    Parameters
    ----------
    model : torch.nn.Module
        A sequence-classification model with one output.
    collator : RankingCollator
        Tokenises the rows (its ``max_answers`` should be None so each batch is as wide as it needs).
    dataset : datasets.Dataset or sequence of rows
        Rows in the ranking format.
    batch_size : int
        Prompts per batch.
    forward_batch_size : int, optional
        Sequences per forward pass (see :func:`score_batch`).
    device : str or torch.device, optional
        Default: the precision's device, else CUDA when available, else CPU.
    precision : Precision, optional
        Run under its autocast, the score head in float32
        (:func:`~rewardcollapse.training.precision.choose_precision`); default: float32.
    progress : bool
        Show a progress bar.
    description : str
        The progress bar's label.
    shared : SharedLayout, optional
        Encode each prompt's shared prefix once for its answers (causal models; see :func:`score_batch`).
    """
    from tqdm.auto import tqdm

    default = precision.device if precision is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device or default)
    model = model.to(device).eval()
    mixed = precision is not None and precision.name != "fp32"
    if mixed:
        score_head_in_float32(model)
    autocast = precision.autocast() if mixed else contextlib.nullcontext()
    with tqdm(total=len(dataset), desc=description, unit="prompt", disable=not progress) as bar:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            if isinstance(rows, Mapping):  # datasets.Dataset slices are column dictionaries
                rows = [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]
            batch = collator(rows)
            tensors = {k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
            with torch.no_grad(), autocast:
                rewards = score_batch(model, tensors, forward_batch_size=forward_batch_size, shared=shared)
            rewards = rewards.float().cpu()
            for b, row in enumerate(rows):
                yield rewards[b, : len(row["responses"])].tolist()
            bar.update(len(rows))


def truncation_by_prompt(dataset: Any) -> tuple[list[int], list[bool]]:
    """Per row of a tokenised ranking dataset: its answers cut at ``max_length``, and whether all were cut alike.

    ``dataset`` comes from :func:`~rewardcollapse.training.collator.tokenize_rankings`; "cut alike" means cut to the
    same token ids.
    Answers that reach the model as the same token ids get the same reward whatever the model (in every layout:
    the shared-prompt layout runs these very sequences), so such a prompt's rewards say nothing about its ranking.
    Comparing ``input_ids`` is enough: the token types and the attention mask follow from them.

    Returns
    -------
    tuple of list
        ``(cut, indistinguishable)``, one entry per row.
    """
    cut = [int(n) for n in dataset["num_truncated"]]
    indistinguishable = [False] * len(cut)
    for p, n in enumerate(cut):
        if n:
            sequences = dataset[p]["input_ids"]
            indistinguishable[p] = all(ids == sequences[0] for ids in sequences[1:])
    return cut, indistinguishable
