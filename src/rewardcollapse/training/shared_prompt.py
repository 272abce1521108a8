r"""Each prompt encoded once for all its K answers: the shared-prompt layout of causal reward models.

A prompt of :math:`P` tokens with :math:`K` answers of :math:`A` tokens costs :math:`K(P + A)` tokens as separate
sequences. In a causal (decoder-only) model a token's hidden state depends only on the tokens before it, so the
tokens every answer's sequence starts with can be computed once: one row holds the shared prefix and then each
answer's own tokens, ``[prefix][rest 1]...[rest K]``, with

* a block attention mask: causal inside the prefix and inside each answer's rest, every rest sees the whole prefix,
  no rest sees another (an additive float mask, which both the eager and the SDPA attention take);
* position ids that restart at the prefix's length for every rest, so each answer is positioned exactly as in its
  own sequence;
* each answer's score read from the hidden state where its own sequence would be read (the last token that is not
  the padding token, as transformers' sequence classifiers read decoders), through the model's own score head.

The shared prefix is the longest common prefix of the K token sequences themselves, so the layout is exact whatever
the tokenizer does at the prompt's boundary (a BPE merge across it just shortens the prefix), and answers that begin
with the same tokens share those too. A row longer than ``row_tokens`` is split: its answers are spread over several
rows that each carry the prefix once. The cost is :math:`P + K A` tokens instead of :math:`K (P + A)`.

Exactness (tested): scores equal separate forwards to 1e-5 in float32, and so do the loss's gradients, for Llama,
Qwen2, Mistral and GPT-2. Bidirectional encoders (BERT, DeBERTa) would see the other answers, so they never use it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

import torch

from rewardcollapse.core.conventions import SharedPromptSetting
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.training.models import is_encoder

__all__ = [
    "SHARED_PROMPT_SETTINGS",
    "SharedPromptStats",
    "cache_eligible",
    "resolve_shared_prompt",
    "score_shared",
    "shared_support",
]

SHARED_PROMPT_SETTINGS = get_args(SharedPromptSetting)
"""``shared_prompt``: ``auto`` uses the layout where it is exact and available (causal models), ``on`` requires it."""

_ATTENTION = ("eager", "sdpa")  # implementations that take an arbitrary additive 4D mask
_METHODS = ("auto", "cache", "rows")
_Answers = list[tuple[int, list[int]]]  # one prompt's answers: (flat slot of its score, its token ids, no padding)


def _unwrapped(model: Any) -> Any:
    """The transformers model under data-parallel and peft wrappers (adapters are injected in place: they still run).

    Only read from: the layout still calls the model through its wrappers, so that DDP synchronises gradients.
    """
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def shared_support(model: Any) -> str | None:
    """Why ``model`` cannot use the shared-prompt layout, or None when it can."""
    inner = _unwrapped(model)
    config = getattr(inner, "config", None)
    kind = getattr(config, "model_type", type(inner).__name__)
    if is_encoder(inner) or getattr(config, "is_encoder_decoder", False):
        return f"{kind} is not a causal model: each token attends to every other, so answers would see each other"
    if not isinstance(getattr(inner, "score", None), torch.nn.Module):
        return f"{type(inner).__name__} has no `score` head (the layout reads each answer's score from it)"
    attention = getattr(config, "_attn_implementation", None)
    if attention not in _ATTENTION:
        return f"{kind} runs attention implementation {attention!r}, which takes no custom mask (use sdpa or eager)"
    return None


def resolve_shared_prompt(setting: str, model: Any) -> tuple[bool, str]:
    """Whether to use the layout for ``setting`` (``auto``/``on``/``off``) and ``model``, and why, in words."""
    if setting not in SHARED_PROMPT_SETTINGS:
        raise InputValueError(f"`shared_prompt` must be one of {SHARED_PROMPT_SETTINGS}, got {setting!r}")
    if setting == "off":
        return False, "off, as set"
    problem = shared_support(model)
    if problem is None:
        return True, "each prompt encoded once for its answers (causal model)"
    if setting == "on":
        raise InputValueError(f"`shared_prompt` 'on': {problem}; use shared_prompt 'auto' or 'off'")
    return False, f"separate sequences: {problem}"


@dataclass
class SharedPromptStats:
    """Tokens run through the model with the layout, and what the same answers cost as separate sequences."""

    tokens: int = 0
    separate_tokens: int = 0

    def add(self, tokens: int, separate: int) -> None:
        """Count one batch: ``tokens`` in the layout's rows, ``separate`` in the answers' own sequences."""
        self.tokens += tokens
        self.separate_tokens += separate

    @property
    def saved(self) -> float:
        """Share of the separate sequences' tokens that the layout did not need (0 before any batch)."""
        return 1 - self.tokens / self.separate_tokens if self.separate_tokens else 0.0


@dataclass(frozen=True)
class _Row:
    """One row of the layout: token ids, position ids, segment of each token (0 prefix, k + 1 answer k), reads."""

    ids: list[int]
    positions: list[int]
    segments: list[int]
    reads: list[tuple[int, int]]  # (flat slot of the answer's score, index in the row to read it from)


def _common_prefix(sequences: list[list[int]]) -> int:
    first = sequences[0]
    length = min(len(s) for s in sequences)
    for i in range(length):
        if any(s[i] != first[i] for s in sequences[1:]):
            return i
    return length


def _prefix_len(answers: _Answers) -> int:
    """The shared prefix of a prompt's answers ``(slot, token ids)``, leaving every answer at least one token.

    That last token of its own gives each answer a place of its own to read its score from.
    """
    sequences = [ids for _, ids in answers]
    return min(_common_prefix(sequences), min(len(s) for s in sequences) - 1)


def _read_index(sequence: list[int], pad_id: int | None) -> int:
    """Where transformers' decoder classifiers read a sequence alone: its last token that is not padding."""
    for i in range(len(sequence) - 1, -1, -1):
        if sequence[i] != pad_id:
            return i
    return len(sequence) - 1


def _rows(answers: _Answers, pad_id: int | None, row_tokens: int) -> list[_Row]:
    """The rows of one prompt's answers ``(slot, token ids)``: the shared prefix once per row, answers after it."""
    p = _prefix_len(answers)
    prefix = answers[0][1][:p]
    rows, current = [], None
    for slot, ids in answers:
        rest = ids[p:]
        if current is None or (len(current["ids"]) + len(rest) > row_tokens and current["reads"]):
            current = {"ids": list(prefix), "positions": list(range(p)), "segments": [0] * p, "reads": []}
            rows.append(current)
        start = len(current["ids"])
        current["ids"] += rest
        current["positions"] += range(p, p + len(rest))
        current["segments"] += [len(current["reads"]) + 1] * len(rest)
        read = _read_index(ids, pad_id)
        current["reads"].append((slot, read if read < p else start + read - p))
    return [_Row(r["ids"], r["positions"], r["segments"], r["reads"]) for r in rows]


def _row_batch(rows: list[_Row], pad_id: int, dtype: torch.dtype, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ids and positions, and the additive block mask ``(R, 1, L, L)`` of a list of rows."""
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    for n, row in enumerate(rows):
        ids[n, : len(row.ids)] = torch.tensor(row.ids)
        positions[n, : len(row.ids)] = torch.tensor(row.positions)
        segments[n, : len(row.ids)] = torch.tensor(row.segments)
    index = torch.arange(width)
    causal = index[:, None] >= index[None, :]
    same = segments[:, :, None] == segments[:, None, :]
    sees_prefix = (segments[:, None, :] == 0) & (segments[:, :, None] >= 0)
    allowed = causal[None] & (same | sees_prefix) & (segments[:, None, :] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool)[None]  # padding attends to itself only: no empty softmax row
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return {
        "input_ids": ids.to(device),
        "position_ids": positions.to(device),
        "attention_mask": mask[:, None].to(device),
    }


def _unit_costs(config: Any) -> tuple[int, int]:
    """Multiply-adds per layer of one token (projections and MLP, 4 h^2 + 3 h m) and of one attended pair (2 h)."""
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 1)
    inner = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden
    return 4 * hidden * hidden + 3 * hidden * inner, 2 * hidden


def _cost(config: Any, lengths: list[int]) -> float:
    """Multiply-adds per layer of running sequences of ``lengths`` padded to the longest, as one forward pass does.

    Per token the projections and the MLP (4 h^2 + 3 h m); per pair of positions the attention scores and their use
    on the values (2 h), dense over the padded width, as SDPA computes a masked attention.
    """
    per_token, per_pair = _unit_costs(config)
    width = max(lengths)
    return len(lengths) * width * per_token + len(lengths) * width * width * per_pair


class _NoReusableCache(Exception):
    """The model's key/value cache cannot be repeated per answer (no ``batch_repeat_interleave``)."""


def _cache_keyword(model: Any) -> str | None:
    """The keyword a model's forward takes its key/value cache by (``cache`` in transformers 5, else the old name)."""
    parameters = inspect.signature(type(_unwrapped(model)).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def cache_eligible(model: Any) -> bool:
    """Whether a prompt's keys and values can be computed once and reused by its answers in a second call.

    Not under DDP (two forward calls before one backward would break its gradient synchronisation), not with
    gradient checkpointing in training (transformers switches the cache off there), and only where the forward
    takes a cache; the one-row layout serves those cases.
    """
    inner = _unwrapped(model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    if inner.training and getattr(inner, "is_gradient_checkpointing", False):
        return False
    return _cache_keyword(inner) is not None


@contextlib.contextmanager
def _score_head_outputs(inner: Any) -> Iterator[list[torch.Tensor]]:
    """The outputs of the score head in each forward call inside the block: ``(rows, width, 1)`` logits.

    The classifier scores every position and keeps one per row; the answers' positions are taken from the score
    head's own output. The model is called whole (not its backbone), so DDP, peft and autocast wrappers all run.
    """
    captured: list[torch.Tensor] = []
    hook = inner.score.register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        yield captured
    finally:
        hook.remove()


def _score_cached(model: Any, prompts: dict[int, _Answers], pad_id: int, device, flat_size: int) -> torch.Tensor:
    """Each prompt's prefix run once, its keys and values kept; then its answers' rests as one batch on that cache.

    The cache is repeated per answer, so attention covers the prefix and each answer's own tokens: no masked blocks
    are computed. Returns the flat ``(B * K,)`` scores.
    """
    inner = _unwrapped(model)
    keyword = _cache_keyword(inner)
    slots, scores = [], []
    with _score_head_outputs(inner) as captured:
        for answers in prompts.values():
            sequences = [ids for _, ids in answers]
            p = _prefix_len(answers)
            reads = [_read_index(ids, pad_id) for ids in sequences]
            prefix_logits, cache = None, None
            if p > 0:
                captured.clear()
                out = model(input_ids=torch.tensor([sequences[0][:p]], device=device), use_cache=True)
                prefix_logits = captured[-1][0, :, 0]
                cache = getattr(out, "cache", None) if keyword == "cache" else out.past_key_values
                if not hasattr(cache, "batch_repeat_interleave"):
                    raise _NoReusableCache(type(cache).__name__)
                cache.batch_repeat_interleave(len(answers))
            width = max(len(s) - p for s in sequences)
            ids = torch.full((len(answers), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(answers), p + width), dtype=torch.long)
            for k, sequence in enumerate(sequences):
                ids[k, : len(sequence) - p] = torch.tensor(sequence[p:])
                attention[k, : len(sequence)] = 1
            positions = (p + torch.arange(width))[None].expand(len(answers), width)
            captured.clear()
            inputs = {
                "input_ids": ids.to(device),
                "attention_mask": attention.to(device),
                "position_ids": positions.to(device),
            }
            if cache is not None:
                inputs[keyword] = cache
            model(**inputs, use_cache=cache is not None)
            rest_logits = captured[-1][:, :, 0]
            for k, ((slot, _), read) in enumerate(zip(answers, reads, strict=True)):
                slots.append(slot)
                scores.append(prefix_logits[read] if read < p else rest_logits[k, read - p])
    values = torch.stack(scores)
    flat = values.new_zeros(flat_size)
    return flat.index_put((torch.tensor(slots, device=device),), values)


def _score_rows(model: Any, rows: list[_Row], pad_id: int, device, flat_size: int) -> torch.Tensor:
    """All the rows in one forward call with their block masks (DDP-safe); returns the flat ``(B * K,)`` scores."""
    inner = _unwrapped(model)
    dtype = next(p for p in inner.parameters()).dtype
    dtype = dtype if dtype.is_floating_point else torch.float32
    with _score_head_outputs(inner) as captured:
        model(**_row_batch(rows, pad_id, dtype, device), use_cache=False)
    logits = captured[-1]  # (rows, width, 1)
    where = [(n, index) for n, row in enumerate(rows) for _, index in row.reads]
    scores = logits[torch.tensor([n for n, _ in where]), torch.tensor([i for _, i in where]), 0]
    targets = torch.tensor([slot for row in rows for slot, _ in row.reads], device=device)
    return scores.new_zeros(flat_size).index_put((targets,), scores)


def _cost_cached(config: Any, answers: list[list[int]], p: int) -> float:
    """Multiply-adds per layer of the cached path for one prompt: the prefix once, then the padded rests on it."""
    per_token, per_pair = _unit_costs(config)
    width = max(len(a) for a in answers) - p
    return (p + len(answers) * width) * per_token + (p * p + len(answers) * width * (p + width)) * per_pair


def _answers_by_prompt(batch: dict[str, Any]) -> tuple[dict[int, _Answers], list[int]]:
    """The batch's answers grouped by prompt (each sequence cut to its real tokens), and every sequence's length."""
    k = batch["answer_mask"].shape[1]
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    prompts: dict[int, _Answers] = {}
    for sequence, length, slot in zip(batch["input_ids"].tolist(), lengths, batch["answer_slot"].tolist(), strict=True):
        prompts.setdefault(slot // k, []).append((slot, sequence[:length]))
    return prompts, lengths


def _separate(stats: SharedPromptStats | None, lengths: list[int]) -> None:
    """Leave the batch to separate sequences (the caller runs them, with the same scores); count their tokens."""
    if stats is not None:
        stats.add(sum(lengths), sum(lengths))


def score_shared(
    model: Any,
    batch: dict[str, Any],
    *,
    row_tokens: int,
    stats: SharedPromptStats | None = None,
    when_cheaper: bool = False,
    method: str = "auto",
) -> torch.Tensor | None:
    """The ``(B, K)`` reward matrix of a :class:`RankingCollator` batch, each prompt's shared prefix encoded once.

    Equals :func:`~rewardcollapse.training.scoring.score_batch` on causal models (module docstring). ``row_tokens``
    bounds a row's length (a prompt whose answers do not fit is split over several rows). With ``when_cheaper`` it
    returns None, without running the model, when the layout would cost more than separate sequences (short
    prompts: the rows' attention outgrows the tokens saved), estimated from the multiply-adds of both; the caller
    then runs the separate sequences, which give the same scores. ``method``: ``"rows"`` (one call over the rows,
    DDP-safe), ``"cache"`` (each prefix run once with its keys and values kept, its answers on them: no masked
    attention blocks, the faster), or ``"auto"``: the cache where :func:`cache_eligible`, else rows.

    It also returns None for sequences longer than the model's sliding attention window (the layouts' masks do not
    model the window; the separate sequences are windowed by the model itself).
    """
    if method not in _METHODS:
        raise InputValueError(f"`method` must be 'auto', 'cache' or 'rows', got {method!r}")
    if method == "cache" and not cache_eligible(model):
        raise InputValueError("`method` 'cache' needs a single process, no gradient checkpointing and a model cache")
    inner = _unwrapped(model)
    config, pad_id = inner.config, inner.config.pad_token_id
    fill = pad_id if pad_id is not None else 0  # the id padding is written with
    shape, device = batch["answer_mask"].shape, batch["input_ids"].device
    prompts, lengths = _answers_by_prompt(batch)
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and max(lengths) > window:
        return _separate(stats, lengths)
    if method != "rows" and cache_eligible(model):
        prefixes = {b: _prefix_len(answers) for b, answers in prompts.items()}
        cost = sum(_cost_cached(config, [s for _, s in answers], prefixes[b]) for b, answers in prompts.items())
        if when_cheaper and cost >= _cost(config, lengths):
            return _separate(stats, lengths)
        try:
            flat = _score_cached(model, prompts, fill, device, shape.numel())
        except _NoReusableCache:  # a cache that cannot be repeated per answer: the rows below serve
            pass
        else:
            if stats is not None:
                rests = sum(len(s) - prefixes[b] for b, answers in prompts.items() for _, s in answers)
                stats.add(sum(prefixes.values()) + rests, sum(lengths))
            return flat.view(shape)
    rows = [row for answers in prompts.values() for row in _rows(answers, pad_id, row_tokens)]
    if when_cheaper and _cost(config, [len(r.ids) for r in rows]) >= _cost(config, lengths):
        # Short prompts: the long rows' attention costs more than the prompt tokens they save. Both are exact.
        return _separate(stats, lengths)
    if stats is not None:
        stats.add(sum(len(r.ids) for r in rows), sum(lengths))
    return _score_rows(model, rows, fill, device, shape.numel()).view(shape)
