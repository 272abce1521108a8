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

The cached way computes the same thing in two calls per batch without the masked blocks between answers: every
prompt's prefix in one call with its keys and values kept, then every answer's rest in a second call on the cache
gathered per answer (:func:`_score_cached`). Which way is fastest depends on the batch and the machine, so
``shared_prompt: auto`` times them on the first training batches (:class:`LayoutTrial`).

Exactness (tested): scores equal separate forwards to 1e-5 in float32, and so do the loss's gradients, for Llama,
Qwen2, Mistral and GPT-2. Bidirectional encoders (BERT, DeBERTa) would see the other answers, so they never use it.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import torch

from rewardcollapse.core.conventions import SharedPromptSetting
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.training.models import is_encoder

__all__ = [
    "LAYOUTS",
    "SHARED_PROMPT_SETTINGS",
    "LayoutTrial",
    "SharedPromptStats",
    "cache_eligible",
    "estimated_saving",
    "resolve_shared_prompt",
    "score_shared",
    "shared_support",
    "unwrapped_model",
]

SHARED_PROMPT_SETTINGS = get_args(SharedPromptSetting)
"""``shared_prompt``: ``auto`` uses the layout where it is exact and available (causal models), ``on`` requires it."""

_ATTENTION = ("eager", "sdpa")  # implementations that take an arbitrary additive 4D mask
_METHODS = ("auto", "cache", "rows")
LAYOUTS = ("off", "cache", "rows")
"""The ways a batch can run: separate sequences, the cached way, the rows way (what :class:`LayoutTrial` times)."""
_Answers = list[tuple[int, list[int]]]  # one prompt's answers: (flat slot of its score, its token ids, no padding)


def unwrapped_model(model: Any) -> Any:
    """The transformers model under data-parallel and peft wrappers (adapters are injected in place: they still run).

    Only read from: the layout still calls the model through its wrappers, so that DDP synchronises gradients.
    """
    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def shared_support(model: Any) -> str | None:
    """Why ``model`` cannot use the shared-prompt layout, or None when it can."""
    inner = unwrapped_model(model)
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


@dataclass
class LayoutTrial:
    """``shared_prompt: auto`` decided by measurement: each candidate way timed on the same first batches.

    The multiply-add estimate misses what a call costs besides its arithmetic (kernel launches, masks, padding,
    the backward's own shape), so on batches where it is not clear-cut it can pick a loser. Here every candidate
    of :data:`LAYOUTS` runs each of the first batches (the order rotated from batch to batch); the first
    ``warmup`` are untimed (one-time allocations and kernel choices), then at least ``rounds`` batches are timed,
    and more, up to ``max_rounds``, while all the ways together have taken less than ``enough_seconds``: a batch
    of milliseconds varies by tens of percent from one run to the next, so one of those is timed more often. The
    candidate with the least total time is kept. All candidates are exact, so which one runs changes no result.

    ``time(run)`` runs one round on the current batch; ``timed_enough(totals)`` says whether to stop and
    ``decide(totals)`` fixes the choice (``totals``: the summed seconds, the same on every process after a
    reduction, so that every process stops at the same batch and keeps the same way).
    """

    candidates: Sequence[str]
    warmup: int = 1
    rounds: int = 2
    max_rounds: int = 8
    enough_seconds: float = 0.5
    seconds: dict[str, float] = field(default_factory=dict)
    batches: int = 0
    chosen: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.candidates) - set(LAYOUTS))
        if unknown or len(self.candidates) < 2:
            raise InputValueError(f"`candidates` must be at least two of {LAYOUTS}, got {list(self.candidates)}")
        self.seconds = dict.fromkeys(self.candidates, 0.0)

    def timed_enough(self, totals: dict[str, float] | None = None) -> bool:
        """Whether enough batches are timed to decide (``totals``, default this process's own seconds)."""
        timed = self.batches - self.warmup
        spent = sum((totals or self.seconds).values())
        return timed >= self.max_rounds or (timed >= self.rounds and spent >= self.enough_seconds)

    def time(self, run: Callable[[str], Any], device: torch.device | str = "cpu") -> None:
        """Run ``run(candidate)`` for each candidate on this batch, timing each after the warm-up batches."""
        shift = self.batches % len(self.candidates)
        order = [*self.candidates[shift:], *self.candidates[:shift]]
        for candidate in order:
            _synchronize(device)
            start = time.perf_counter()
            run(candidate)
            _synchronize(device)
            if self.batches >= self.warmup:
                self.seconds[candidate] += time.perf_counter() - start
        self.batches += 1

    def decide(self, totals: dict[str, float] | None = None) -> str:
        """Keep the candidate with the least total time (``totals``, default this process's own)."""
        if totals is not None:
            self.seconds = dict(totals)
        self.chosen = min(self.candidates, key=lambda c: (self.seconds[c], self.candidates.index(c)))
        timed = self.batches - self.warmup
        each = ", ".join(f"{c} {self.seconds[c] / timed:.3g} s" for c in sorted(self.seconds, key=self.seconds.get))
        self.reason = f"timed on {timed} batches after {self.warmup} untimed ({each} per batch)"
        return self.chosen

    def settle(self, way: str, reason: str) -> None:
        """Keep ``way`` without timing anything (the estimate is clear-cut), for ``reason``."""
        self.chosen, self.reason = way, reason

    def record(self) -> dict[str, Any]:
        """The trial as JSON values: the way kept and why, each way's seconds per timed batch, the batches timed.

        Before a choice, ``chosen`` is None and the reason says how far the trial got.
        """
        timed = max(self.batches - self.warmup, 0)
        per_batch = {c: round(self.seconds[c] / timed, 6) for c in self.candidates} if timed else None
        reason = self.reason or f"not decided: {self.batches} batches run every way, {timed} of them timed"
        return {"chosen": self.chosen, "reason": reason, "seconds_per_batch": per_batch, "timed_batches": timed}

    def summary(self) -> str:
        """The choice and why, in words."""
        return f"{self.chosen}, {self.reason}"


def _synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work, so that a wall-clock time covers it (CUDA runs asynchronously)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


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


def _rows(answers: _Answers, p: int, pad_id: int | None, row_tokens: int) -> list[_Row]:
    """The rows of one prompt's answers ``(slot, token ids)``: the shared prefix once per row, answers after it.

    ``p``: the prefix's length (:func:`_prefix_len`), computed once per batch by the caller.
    """
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
    return {
        "input_ids": ids.to(device),
        "position_ids": positions.to(device),
        "attention_mask": _additive(allowed, dtype).to(device),
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
    """The model's key/value cache cannot be gathered per answer (no ``batch_select_indices``)."""


def _cache_keyword(model: Any) -> str | None:
    """The keyword a model's forward takes its key/value cache by (``cache`` in transformers 5, else the old name)."""
    parameters = inspect.signature(type(unwrapped_model(model)).forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def cache_eligible(model: Any) -> bool:
    """Whether a prompt's keys and values can be computed once and reused by its answers in a second call.

    Not under DDP (two forward calls before one backward would break its gradient synchronisation), not with
    gradient checkpointing in training (transformers switches the cache off there), and only where the forward
    takes a cache; the one-row layout serves those cases.
    """
    inner = unwrapped_model(model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return False
    checkpointing = getattr(inner, "is_activation_checkpointing", None)  # transformers >= 5.x; the old name before
    if checkpointing is None:
        checkpointing = getattr(inner, "is_gradient_checkpointing", False)
    if inner.training and checkpointing:
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


def _mask_dtype(inner: Any) -> torch.dtype:
    """The dtype of an additive mask for ``inner``: its weights' floating dtype (float32 for quantised weights)."""
    dtype = next(p for p in inner.parameters()).dtype
    return dtype if dtype.is_floating_point else torch.float32


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive mask ``(R, 1, Q, L)`` of a boolean ``(R, Q, L)`` one: 0 where attended, the dtype's minimum not."""
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def _score_cached(
    model: Any,
    prompts: dict[int, _Answers],
    prefix_lengths: dict[int, int],
    pad_id: int,
    device,
    flat_size: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Every prompt's prefix in one forward with its keys and values kept, then every answer's rest in a second.

    Two model calls whatever the number of prompts. The prefixes are right-padded to the longest; the cache is
    gathered per answer (each answer gets its own prompt's keys and values), and each rest attends, through an
    explicit mask, to its prompt's real prefix tokens and causally to its own. Position ids continue each answer
    from its own prefix's length, so every token sees exactly what it sees in its own sequence; with the mask
    explicit, where the padding sits (left, as in batched generation, or right, as here) changes nothing. Padding
    queries attend to themselves only, so no softmax row is empty. No masked block between answers is computed:
    attention covers the prefix and each answer's own tokens. ``prefix_lengths``: each prompt's shared prefix
    (:func:`_prefix_len`). Returns the flat ``(B * K,)`` scores.
    """
    inner = unwrapped_model(model)
    keyword = _cache_keyword(inner)
    groups = list(prompts.values())
    prefixes = [prefix_lengths[b] for b in prompts]
    width = max(prefixes)
    owner = [b for b, answers in enumerate(groups) for _ in answers]  # the prompt of each answer, in order
    sequences = [ids for answers in groups for _, ids in answers]
    starts = [prefixes[b] for b in owner]  # where each answer's rest begins in its own sequence
    rest_width = max(len(s) - p for s, p in zip(sequences, starts, strict=True))

    ids = torch.full((len(groups), width), pad_id, dtype=torch.long)
    for b, answers in enumerate(groups):
        ids[b, : prefixes[b]] = torch.tensor(answers[0][1][: prefixes[b]])
    real = torch.arange(width)[None] < torch.tensor(prefixes)[:, None]  # (B, width)
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = (causal[None] & real[:, None, :]) | torch.eye(width, dtype=torch.bool)[None]
    with _score_head_outputs(inner) as captured:
        out = model(
            input_ids=ids.to(device),
            attention_mask=_additive(allowed, dtype).to(device),
            position_ids=torch.arange(width)[None].expand(len(groups), width).to(device),
            use_cache=True,
        )
        prefix_logits = captured[-1][:, :, 0]  # (B, width)
        cache = getattr(out, "cache", None) if keyword == "cache" else out.past_key_values
        if not hasattr(cache, "batch_select_indices"):
            raise _NoReusableCache(type(cache).__name__)
        owners = torch.tensor(owner)
        cache.batch_select_indices(owners.to(device))  # (B, ...) -> (N, ...): each answer its prompt's keys

        rests = torch.full((len(sequences), rest_width), pad_id, dtype=torch.long)
        lengths = torch.tensor([len(s) - p for s, p in zip(sequences, starts, strict=True)])
        for n, (sequence, p) in enumerate(zip(sequences, starts, strict=True)):
            rests[n, : len(sequence) - p] = torch.tensor(sequence[p:])
        own = torch.arange(rest_width)[None] < lengths[:, None]  # (N, rest_width)
        rest_causal = torch.ones(rest_width, rest_width, dtype=torch.bool).tril()
        to_rest = (rest_causal[None] & own[:, None, :]) | torch.eye(rest_width, dtype=torch.bool)[None]
        to_prefix = real[owners][:, None, :].expand(-1, rest_width, -1)
        positions = torch.tensor(starts)[:, None] + torch.arange(rest_width)[None]
        captured.clear()
        model(
            input_ids=rests.to(device),
            attention_mask=_additive(torch.cat([to_prefix, to_rest], dim=2), dtype).to(device),
            position_ids=positions.to(device),
            use_cache=True,
            **{keyword: cache},
        )
        rest_logits = captured[-1][:, :, 0]  # (N, rest_width)
    # Each answer's score where its own sequence is read: in its prompt's prefix, or in its rest.
    reads = torch.tensor([_read_index(s, pad_id) for s in sequences]) - torch.tensor(starts)
    in_rest = reads >= 0
    from_rest = rest_logits[torch.arange(len(sequences)), reads.clamp_min(0).to(device)]
    from_prefix = prefix_logits[owners.to(device), (reads + torch.tensor(starts)).clamp_max(width - 1).to(device)]
    values = torch.where(in_rest.to(device), from_rest, from_prefix)
    slots = torch.tensor([slot for answers in groups for slot, _ in answers], device=device)
    return values.new_zeros(flat_size).index_put((slots,), values)


def _score_rows(model: Any, rows: list[_Row], pad_id: int, device, flat_size: int) -> torch.Tensor:
    """All the rows in one forward call with their block masks (DDP-safe); returns the flat ``(B * K,)`` scores."""
    inner = unwrapped_model(model)
    with _score_head_outputs(inner) as captured:
        model(**_row_batch(rows, pad_id, _mask_dtype(inner), device), use_cache=False)
    logits = captured[-1]  # (rows, width, 1)
    where = [(n, index) for n, row in enumerate(rows) for _, index in row.reads]
    scores = logits[torch.tensor([n for n, _ in where]), torch.tensor([i for _, i in where]), 0]
    targets = torch.tensor([slot for row in rows for slot, _ in row.reads], device=device)
    return scores.new_zeros(flat_size).index_put((targets,), scores)


def _cost_cached(config: Any, prompts: dict[int, _Answers], prefixes: dict[int, int]) -> float:
    """Multiply-adds per layer of the cached way: the padded prefixes in one call, then the padded rests on them."""
    per_token, per_pair = _unit_costs(config)
    width = max(prefixes.values())
    rests = [len(ids) - prefixes[b] for b, answers in prompts.items() for _, ids in answers]
    rest = max(rests)
    first = len(prompts) * (width * per_token + width * width * per_pair)
    return first + len(rests) * (rest * per_token + rest * (width + rest) * per_pair)


def estimated_saving(model: Any, batch: dict[str, Any], *, row_tokens: int) -> float:
    """The share of a batch's multiply-adds the layout's cheaper way would save over separate sequences (<= 1).

    0 where nothing is shared or the sequences outgrow a sliding window; negative where the layout costs more. The
    cached way counts only where :func:`cache_eligible`. An estimate: it leaves out what a call costs besides its
    arithmetic, so only a clear-cut value should decide anything (:class:`LayoutTrial` times the rest).
    """
    config = unwrapped_model(model).config
    prompts, lengths = _answers_by_prompt(batch)
    prefixes = _shared_prefixes(config, prompts, lengths)
    if prefixes is None:
        return 0.0
    rows = [
        row for b, answers in prompts.items() for row in _rows(answers, prefixes[b], config.pad_token_id, row_tokens)
    ]
    shared = _cost(config, [len(r.ids) for r in rows])
    if cache_eligible(model):
        shared = min(shared, _cost_cached(config, prompts, prefixes))
    return 1 - shared / _cost(config, lengths)


def _shared_prefixes(config: Any, prompts: dict[int, _Answers], lengths: list[int]) -> dict[int, int] | None:
    """Each prompt's shared prefix length, or None where the layout cannot serve the batch exactly or saves nothing.

    None for sequences longer than the model's sliding attention window (the layouts' masks do not model the
    window; the separate sequences are windowed by the model itself) and where no prompt shares a token.
    """
    window = getattr(config, "sliding_window", None)
    if isinstance(window, int) and max(lengths) > window:
        return None
    prefixes = {b: _prefix_len(answers) for b, answers in prompts.items()}
    return prefixes if any(prefixes.values()) else None


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

    Equals :func:`~rewardcollapse.training.scoring.score_batch` on causal models (module docstring). ``method``:

    * ``"cache"``: every prefix in one call with its keys and values kept, every answer's rest in a second call on
      them (no masked attention blocks; one process, no gradient checkpointing);
    * ``"rows"``: one call over rows ``[prefix][rest 1]...[rest K]`` with block masks (DDP-safe, checkpointing-safe);
      ``row_tokens`` bounds a row's length (a prompt whose answers do not fit is split over several rows);
    * ``"auto"``: the cache where :func:`cache_eligible`, else the rows.

    It returns None, without running the model, when nothing is shared (every prompt's answers differ from their
    first token) and, with ``when_cheaper``, when the multiply-add estimate says the layout would cost more than
    separate sequences; the caller then runs the separate sequences, which give the same scores. It also returns
    None for sequences longer than the model's sliding attention window (the layouts' masks do not model the
    window; the separate sequences are windowed by the model itself).
    """
    if method not in _METHODS:
        raise InputValueError(f"`method` must be 'auto', 'cache' or 'rows', got {method!r}")
    if method == "cache" and not cache_eligible(model):
        raise InputValueError("`method` 'cache' needs a single process, no gradient checkpointing and a model cache")
    inner = unwrapped_model(model)
    config, pad_id = inner.config, inner.config.pad_token_id
    fill = pad_id if pad_id is not None else 0  # the id padding is written with
    shape, device = batch["answer_mask"].shape, batch["input_ids"].device
    prompts, lengths = _answers_by_prompt(batch)
    prefixes = _shared_prefixes(config, prompts, lengths)
    if prefixes is None:
        return _separate(stats, lengths)
    if method != "rows" and cache_eligible(model):
        if when_cheaper and _cost_cached(config, prompts, prefixes) >= _cost(config, lengths):
            return _separate(stats, lengths)
        try:
            flat = _score_cached(model, prompts, prefixes, fill, device, shape.numel(), _mask_dtype(inner))
        except _NoReusableCache:  # a cache whose rows cannot be gathered per answer: the rows below serve
            pass
        else:
            if stats is not None:
                rests = sum(len(s) - prefixes[b] for b, answers in prompts.items() for _, s in answers)
                stats.add(sum(prefixes.values()) + rests, sum(lengths))
            return flat.view(shape)
    rows = [row for b, answers in prompts.items() for row in _rows(answers, prefixes[b], pad_id, row_tokens)]
    if when_cheaper and _cost(config, [len(r.ids) for r in rows]) >= _cost(config, lengths):
        # Short prompts: the long rows' attention costs more than the prompt tokens they save. Both are exact.
        return _separate(stats, lengths)
    if stats is not None:
        stats.add(sum(len(r.ids) for r in rows), sum(lengths))
    return _score_rows(model, rows, fill, device, shape.numel()).view(shape)
