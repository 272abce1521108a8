r"""Ranking rows as token sequences: each (prompt, response) tokenised once, then batched with the score indices.

A batch of ``B`` prompts with ``n_b`` answers each becomes ``N = sum n_b`` token sequences (not the
:math:`\sum n_b (n_b - 1)` sequences of pairwise batching), plus where each sequence's score goes in the
``(B, K)`` reward matrix and which answers are ranked above which.

Tokenising happens once per dataset, not per step: :func:`tokenize_rankings` adds each row's token ids and its loss
utility as columns with ``datasets.map`` (batched, and cached on disk for file-backed datasets, as TRL prepares its
data), and :class:`RankingCollator` only pads them and builds the pair matrix. Rows without token ids (a plain list
given to the collator) are tokenised by the same function on the fly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch

from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, SequenceFormat, prompt_utility
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data.schema import pair_margins, ranked_pairs
from rewardcollapse.settings import MAX_LENGTH, OverLong

__all__ = [
    "SEQUENCE_FORMATS",
    "TOKEN_COLUMNS",
    "RankingCollator",
    "encode_rows",
    "openness_of",
    "prompt_utility",
    "tokenize_rankings",
]

_log = logging.getLogger(__name__)

TOKEN_COLUMNS = ("input_ids", "attention_mask", "token_type_ids")
"""Per-answer token columns that :func:`tokenize_rankings` adds (``token_type_ids`` where the tokenizer makes them)."""


def openness_of(row: Mapping[str, Any]) -> float:
    """A row's openness for ``utility="openness"`` training, or a ValueError naming the row's prompt."""
    if row.get("openness") is None:
        raise InputValueError(
            f"utility='openness' needs `openness` on every row; the row with prompt {str(row.get('prompt'))[:60]!r} "
            "has none (add it, or train with a fixed or prompt-aware utility)"
        )
    return float(row["openness"])


SEQUENCE_FORMATS = get_args(SequenceFormat)
"""How a (prompt, answer) becomes the model's input; see :func:`encode_rows`."""


def _messages(prompt: Any, response: Any) -> list[dict[str, Any]]:
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return messages + (list(response) if isinstance(response, list) else [{"role": "assistant", "content": response}])


def _require_chat_template(tokenizer: Any) -> None:
    if getattr(tokenizer, "chat_template", None) is None:
        raise InputValueError(
            "conversational rows (lists of messages) need a tokenizer with a chat template; set "
            "tokenizer.chat_template or convert the rows to text"
        )


def _cut(ids: list[int], max_length: int, side: str, eos_id: int | None) -> list[int]:
    if side == "left":
        return ids[-max_length:]
    if eos_id is not None and ids[-1] == eos_id:  # the end-of-sequence token stays the last one
        return [*ids[: max_length - 1], eos_id]
    return ids[:max_length]


def _encode_trl(texts: list[tuple[Any, Any]], tokenizer: Any, max_length: int | None) -> tuple[list[dict], list[bool]]:
    """TRL's input: prompt + answer as one text with the end-of-sequence token, or the exchange's chat template.

    Longer sequences are cut on the tokenizer's ``truncation_side``; a sequence cut on the right keeps its
    end-of-sequence token as its last token.
    """
    eos = getattr(tokenizer, "eos_token", None)
    plain = [i for i, (prompt, answer) in enumerate(texts) if isinstance(prompt, str) and isinstance(answer, str)]
    ids: list[list[int] | None] = [None] * len(texts)
    if plain:
        joined = [texts[i][0] + texts[i][1] for i in plain]
        joined = [text if eos is None or text.endswith(eos) else text + eos for text in joined]
        for i, encoded in zip(plain, tokenizer(joined, truncation=False)["input_ids"], strict=True):
            ids[i] = list(encoded)
    for i, (prompt, answer) in enumerate(texts):
        if ids[i] is None:
            _require_chat_template(tokenizer)
            encoded = tokenizer.apply_chat_template(_messages(prompt, answer), tokenize=True, return_dict=True)
            ids[i] = list(encoded["input_ids"])
    side = getattr(tokenizer, "truncation_side", "right")
    eos_id = getattr(tokenizer, "eos_token_id", None)
    cut = [max_length is not None and len(seq) > max_length for seq in ids]
    flat = []
    for seq, long in zip(ids, cut, strict=True):
        seq = _cut(seq, max_length, side, eos_id) if long else seq
        flat.append({"input_ids": seq, "attention_mask": [1] * len(seq)})
    return flat, cut


def _encode_pair(texts: list[tuple[Any, Any]], tokenizer: Any, max_length: int | None) -> tuple[list[dict], list[bool]]:
    """The text pair (prompt, answer) with the tokenizer's pair template; chat rows through the chat template.

    Longer sequences are cut, longest part first.
    """
    rendered = []
    for prompt, answer in texts:
        if isinstance(prompt, str) and isinstance(answer, str):
            rendered.append((prompt, answer))
        else:
            _require_chat_template(tokenizer)
            rendered.append((tokenizer.apply_chat_template(_messages(prompt, answer), tokenize=False), None))
    flat: list[dict[str, list[int]] | None] = [None] * len(rendered)
    cut_flags = [False] * len(rendered)
    # Chat-template text already has its special tokens.
    for is_pair in (True, False):
        where = [i for i, (_, second) in enumerate(rendered) if (second is not None) == is_pair]
        if not where:
            continue
        firsts = [rendered[i][0] for i in where]
        seconds = [rendered[i][1] for i in where] if is_pair else None
        kwargs = {"add_special_tokens": is_pair}
        full = tokenizer(firsts, seconds, truncation=False, **kwargs)
        long = [n for n, ids in enumerate(full["input_ids"]) if max_length is not None and len(ids) > max_length]
        if long:
            cut = tokenizer(
                [firsts[n] for n in long],
                [seconds[n] for n in long] if is_pair else None,
                truncation=True,
                max_length=max_length,
                **kwargs,
            )
            for m, n in enumerate(long):
                for key in full:
                    full[key][n] = cut[key][m]
                cut_flags[where[n]] = True
        for n, i in enumerate(where):
            flat[i] = {key: full[key][n] for key in full if key in TOKEN_COLUMNS}
    return flat, cut_flags


def encode_rows(
    rows: Sequence[Mapping[str, Any]], tokenizer: Any, *, max_length: int | None, sequence_format: str = "pair"
) -> dict[str, list]:
    """Token ids of every answer of every row, grouped by row, and how many of each row's had to be truncated.

    ``sequence_format="pair"`` encodes text rows as the tokenizer's text pair (prompt, response), with token type
    ids and separators: the input of BERT-style cross-encoders. ``"trl"`` encodes them as TRL's ``RewardTrainer``
    does: prompt + response as one text with the end-of-sequence token appended (when the tokenizer has one and the
    text does not end with it), with the tokenizer's own special tokens: the input of decoder reward models. Chat
    rows (lists of messages) go through the tokenizer's chat template in both, a string response appended as the
    assistant's message. Sequences longer than ``max_length`` are cut and counted (``max_length=None``: none is
    cut); in the trl format a sequence cut on the right keeps its end-of-sequence token.

    Returns
    -------
    dict
        ``input_ids``, ``attention_mask`` (and ``token_type_ids``): per row a list with one token list per answer;
        ``num_truncated``: per row the number of its answers that were cut.
    """
    if sequence_format not in SEQUENCE_FORMATS:
        raise InputValueError(f"`sequence_format` must be one of {SEQUENCE_FORMATS}, got {sequence_format!r}")
    texts = [(row["prompt"], response) for row in rows for response in row["responses"]]
    encode = _encode_trl if sequence_format == "trl" else _encode_pair
    flat, cut_flags = encode(texts, tokenizer, max_length)
    columns: dict[str, list] = {key: [] for key in TOKEN_COLUMNS if flat and key in flat[0]}
    columns["num_truncated"] = []
    start = 0
    for row in rows:
        stop = start + len(row["responses"])
        for key in columns:
            if key != "num_truncated":
                columns[key].append([flat[i][key] for i in range(start, stop)])
        columns["num_truncated"].append(sum(cut_flags[start:stop]))
        start = stop
    return columns


def _loss_utilities(rows: Sequence[Mapping[str, Any]], setting: str, closed: str, open_: str) -> dict[str, list]:
    """Each row's utility for the loss under the ``utility`` setting: its openness, or else its spec.

    ``loss_openness`` for the continuous family (setting ``"openness"``), ``loss_utility`` otherwise.
    """
    if setting == OPENNESS:
        return {"loss_openness": [openness_of(row) for row in rows]}
    return {"loss_utility": [prompt_utility(row, setting, closed, open_) for row in rows]}


def _without_over_long(row: dict[str, Any], max_length: int) -> dict[str, Any]:
    """A tokenised row without its answers longer than ``max_length`` and the ranked pairs they are in.

    The remaining answers keep their ranks (so a merged ranking keeps the order among them) and their own pairs
    and margins; ``num_dropped`` counts the answers left out.
    """
    keep = [i for i, ids in enumerate(row["input_ids"]) if len(ids) <= max_length]
    out = dict(row, num_dropped=len(row["responses"]) - len(keep), num_truncated=0)
    if len(keep) == len(row["responses"]):
        return out
    for key in ("responses", "ranks", *TOKEN_COLUMNS):
        if row.get(key) is not None:
            out[key] = [row[key][i] for i in keep]
    if row.get("pairs") is not None:
        new = {old: n for n, old in enumerate(keep)}
        kept = [n for n, (i, j) in enumerate(row["pairs"]) if i in new and j in new]
        out["pairs"] = [[new[row["pairs"][n][0]], new[row["pairs"][n][1]]] for n in kept]
        if row.get("margins") is not None:
            out["margins"] = [row["margins"][n] for n in kept]
    return out


def _has_pairs(row: Mapping[str, Any]) -> bool:
    return len(row["responses"]) > 1 and bool(ranked_pairs(row).any())


def _tokenize_batch(batch: dict[str, list], indices: list[int], **settings: Any) -> dict[str, list]:
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    tokenizer, name = settings.pop("tokenizer"), settings.pop("name")
    try:
        columns = _loss_utilities(rows, settings["utility"], settings["closed_utility"], settings["open_utility"])
    except InputValueError:
        for index, row in zip(indices, rows, strict=True):  # name the first row without what it needs
            try:
                _loss_utilities([row], settings["utility"], settings["closed_utility"], settings["open_utility"])
            except InputValueError as error:
                raise InputValueError(f"`{name}` row {index}: {error}") from None
        raise
    drop = settings["over_long"] == "drop"
    max_length = settings["max_length"]
    encoded = encode_rows(
        rows, tokenizer, max_length=None if drop else max_length, sequence_format=settings["sequence_format"]
    )
    if not drop or max_length is None:
        return {**encoded, **columns, **({"num_dropped": [0] * len(rows)} if drop else {})}
    kept = [
        _without_over_long({**row, **{key: values[b] for key, values in encoded.items()}}, max_length)
        for b, row in enumerate(rows)
    ]
    names = [key for key in kept[0] if key in encoded or key in batch or key == "num_dropped"]
    return {**{key: [row[key] for row in kept] for key in names}, **columns}


def tokenize_rankings(
    dataset: Any,
    tokenizer: Any,
    *,
    max_length: int,
    utility: str = "log",
    closed_utility: str = CLOSED_UTILITY,
    open_utility: str = OPEN_UTILITY,
    name: str = "dataset",
    num_proc: int | None = None,
    sequence_format: str = "pair",
    over_long: OverLong = "truncate",
) -> Any:
    """Add the token columns of :func:`encode_rows` and each row's loss utility to a ranking ``datasets.Dataset``.

    One batched ``map`` over the dataset (cached on disk for file-backed datasets); a prompt-aware or openness run
    whose row lacks what it needs fails here, naming the row, before any training step.

    ``over_long="truncate"`` cuts sequences longer than ``max_length`` (``num_truncated`` per row counts them);
    ``"drop"`` leaves each such answer out of its row together with every ranked pair it is in, as TRL drops a
    pairwise row with an over-long sequence, then drops the rows left without a ranked pair; ``num_dropped`` per
    row counts its answers left out, and one log line gives the totals.

    Raises
    ------
    ValueError
        For a row without a ``utility``/``openness`` that ``utility`` needs, or conversational rows without a chat
        template, naming ``name`` and the row.
    """
    settings = {
        "tokenizer": tokenizer,
        "max_length": max_length,
        "utility": utility,
        "closed_utility": closed_utility,
        "open_utility": open_utility,
        "name": name,
        "sequence_format": sequence_format,
        "over_long": over_long,
    }
    if over_long not in get_args(OverLong):
        raise InputValueError(f"`over_long` must be one of {get_args(OverLong)}, got {over_long!r}")
    tokenized = dataset.map(
        _tokenize_batch,
        batched=True,
        with_indices=True,
        fn_kwargs=settings,
        num_proc=num_proc,
        desc=f"tokenizing {name}",
    )
    if over_long == "truncate" or max_length is None:
        return tokenized
    kept = tokenized.filter(_has_pairs, num_proc=num_proc, desc=f"dropping {name}'s rankings left without a pair")
    dropped = sum(tokenized["num_dropped"])
    if dropped:
        answers = dropped + sum(len(responses) for responses in tokenized["responses"])
        _log.info(
            "%s: dropped %d of %d sequences longer than max_length=%d tokens (over_long='drop'), with every ranked "
            "pair they were in; %d of %d rankings were left without a pair and dropped",
            name,
            dropped,
            answers,
            max_length,
            len(tokenized) - len(kept),
            len(tokenized),
        )
    return kept


@dataclass
class RankingCollator:
    """Collate ranking rows into one padded batch of token sequences for :class:`RankingRewardTrainer`.

    Rows tokenised by :func:`tokenize_rankings` are only padded; raw rows are tokenised here first.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Pads the sequences; encodes raw rows as :func:`encode_rows` does.
    max_length : int or None
        Tokens per sequence; longer sequences of raw rows are truncated (longest part first; in the trl format
        keeping the end-of-sequence token) and counted in ``num_truncated``, or left out (``over_long``). None: no
        cut.
    max_answers : int, optional
        Width ``K`` of the reward matrix; default: the batch's largest number of answers. A trainer fixes it to the
        dataset's largest so that evaluation batches concatenate.
    utility, closed_utility, open_utility : str
        As in :class:`RankingRewardConfig`.
    sequence_format : {"pair", "trl"}
        How raw rows are encoded (:func:`encode_rows`).
    over_long : {"truncate", "drop"}
        For raw rows, as in :func:`tokenize_rankings`: an over-long answer is cut, or left out with its pairs (a
        row left without a ranked pair leaves the batch; a batch left empty is an error).
    pad_to_multiple_of : int, optional
        Pad each batch's sequences to a multiple of this many tokens (TRL's ``pad_to_multiple_of``).
    """

    tokenizer: Any
    max_length: int | None = MAX_LENGTH
    max_answers: int | None = None
    utility: str = "log"
    closed_utility: str = CLOSED_UTILITY
    open_utility: str = OPEN_UTILITY
    sequence_format: str = "pair"
    over_long: OverLong = "truncate"
    pad_to_multiple_of: int | None = None

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ranking rows.

        Returns
        -------
        dict
            ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them), each
            ``(N, L)``; ``answer_slot`` ``(N,)``, the flat index ``b * K + k`` of each sequence's score;
            ``answer_mask`` ``(B, K)``; ``pairs`` ``(B, K, K)`` bool, answer ``i`` above ``j``; ``utilities``,
            the ``B`` prompts' utility specs or (``utility="openness"``) a ``(B,)`` tensor of their openness, as
            :func:`~rewardcollapse.loss.ranking_loss` takes them; ``num_truncated``, a 0-d tensor.
        """
        counts = [len(row["responses"]) for row in rows]
        k = self.max_answers or max(counts)
        if max(counts) > k:
            raise InputValueError(f"a row has {max(counts)} responses but `max_answers` is {k}; raise `max_answers`")
        if "input_ids" not in rows[0]:  # raw rows: tokenised here, as tokenize_rankings would
            drop = self.over_long == "drop" and self.max_length is not None
            encoded = encode_rows(
                rows, self.tokenizer, max_length=None if drop else self.max_length, sequence_format=self.sequence_format
            )
            loss_columns = _loss_utilities(rows, self.utility, self.closed_utility, self.open_utility)
            rows = [
                {**row, **{key: values[b] for key, values in {**encoded, **loss_columns}.items()}}
                for b, row in enumerate(rows)
            ]
            if drop:
                rows = [row for row in (_without_over_long(row, self.max_length) for row in rows) if _has_pairs(row)]
                if not rows:
                    raise InputValueError(
                        f"every row of the batch has fewer than two answers within max_length={self.max_length} "
                        "tokens (over_long='drop'); raise max_length or use over_long='truncate'"
                    )
                counts = [len(row["responses"]) for row in rows]
        keys = [key for key in TOKEN_COLUMNS if key in rows[0]]
        sequences = [{key: row[key][i] for key in keys} for row in rows for i in range(len(row["responses"]))]
        # Padded on the right whatever the tokenizer's side, as TRL does: models with absolute positions (GPT-2,
        # BERT) then see each sequence at the positions it has alone, and a decoder reads its last real token.
        batch = dict(
            self.tokenizer.pad(
                sequences, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"
            )
        )
        slots, mask = [], torch.zeros(len(rows), k, dtype=torch.bool)
        pairs = torch.zeros(len(rows), k, k, dtype=torch.bool)
        for b, (row, n) in enumerate(zip(rows, counts, strict=True)):
            slots.extend(b * k + i for i in range(n))
            mask[b, :n] = True
            pairs[b, :n, :n] = torch.from_numpy(ranked_pairs(row))
        if "loss_openness" in rows[0]:
            utilities = torch.tensor([row["loss_openness"] for row in rows], dtype=torch.float32)
        else:
            utilities = [row["loss_utility"] for row in rows]
        batch.update(
            answer_slot=torch.tensor(slots),
            answer_mask=mask,
            pairs=pairs,
            utilities=utilities,
            num_truncated=torch.tensor(sum(row["num_truncated"] for row in rows)),
        )
        if any(row.get("margins") is not None for row in rows):  # TRL's `margin`, per ranked pair
            margins = torch.zeros(len(rows), k, k)
            for b, (row, n) in enumerate(zip(rows, counts, strict=True)):
                margins[b, :n, :n] = torch.from_numpy(pair_margins(row))
            batch["margins"] = margins
        return batch
