r"""Batching ranking rows: each (prompt, response) tokenised once, with the indices that put the scores back.

A batch of ``B`` prompts with ``n_b`` answers each becomes ``N = sum n_b`` token sequences (not the
:math:`\sum n_b (n_b - 1)` sequences of pairwise batching), plus where each sequence's score goes in the
``(B, K)`` reward matrix and which answers are ranked above which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_UTILITY, OPENNESS, prompt_utility
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data.schema import ranked_pairs

__all__ = ["RankingCollator", "openness_of", "prompt_utility"]


def openness_of(row: Mapping[str, Any]) -> float:
    """A row's openness for ``utility="openness"`` training, or a ValueError naming the row's prompt."""
    if row.get("openness") is None:
        raise InputValueError(
            f"utility='openness' needs `openness` on every row; the row with prompt {str(row.get('prompt'))[:60]!r} "
            "has none (add it, or train with a fixed or prompt-aware utility)"
        )
    return float(row["openness"])


@dataclass
class RankingCollator:
    """Collate ranking-format rows into one batch of token sequences for :class:`RankingRewardTrainer`.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerBase
        Encodes text rows as the pair (prompt, response); chat rows (lists of messages) go through its chat
        template, with a string response appended as the assistant's message.
    max_length : int
        Tokens per sequence; longer sequences are truncated (longest part first) and counted in
        ``num_truncated``.
    max_answers : int, optional
        Width ``K`` of the reward matrix; default: the batch's largest number of answers. A trainer fixes it to the
        dataset's largest so that evaluation batches concatenate.
    utility, closed_utility, open_utility : str
        As in :class:`RankingRewardConfig`.

    """

    tokenizer: Any
    max_length: int = 512
    max_answers: int | None = None
    utility: str = "log"
    closed_utility: str = CLOSED_UTILITY
    open_utility: str = OPEN_UTILITY

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ranking rows.

        Returns
        -------
        dict
            ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer makes them), each
            ``(N, L)``; ``answer_slot`` ``(N,)``, the flat index ``b * K + k`` of each sequence's score;
            ``answer_mask`` ``(B, K)``; ``pairs`` ``(B, K, K)`` bool, answer ``i`` above ``j``; ``utility``, one
            spec, ``B`` specs, or (``utility="openness"``) a ``(B,)`` tensor of openness; ``num_truncated``, a 0-d
            tensor.
        """
        counts = [len(row["responses"]) for row in rows]
        k = self.max_answers or max(counts)
        if max(counts) > k:
            raise InputValueError(f"a row has {max(counts)} responses but `max_answers` is {k}; raise `max_answers`")
        encodings, truncated = self._encode(rows)
        batch = dict(self.tokenizer.pad(encodings, return_tensors="pt"))
        slots, mask = [], torch.zeros(len(rows), k, dtype=torch.bool)
        pairs = torch.zeros(len(rows), k, k, dtype=torch.bool)
        for b, (row, n) in enumerate(zip(rows, counts, strict=True)):
            slots.extend(b * k + i for i in range(n))
            mask[b, :n] = True
            pairs[b, :n, :n] = torch.from_numpy(ranked_pairs(row))
        if self.utility == OPENNESS:
            utility = torch.tensor([openness_of(row) for row in rows], dtype=torch.float32)
        else:
            specs = [prompt_utility(row, self.utility, self.closed_utility, self.open_utility) for row in rows]
            utility = specs[0] if len(set(specs)) == 1 else specs
        batch.update(
            answer_slot=torch.tensor(slots),
            answer_mask=mask,
            pairs=pairs,
            utility=utility,
            num_truncated=torch.tensor(truncated),
        )
        return batch

    def _encode(self, rows: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, list[int]]], int]:
        """Token ids of every (prompt, response) in row order, and how many had to be truncated."""
        texts = [self._text(row["prompt"], response) for row in rows for response in row["responses"]]
        encodings: list[dict[str, list[int]] | None] = [None] * len(texts)
        truncated = 0
        # Text rows are encoded as a (prompt, response) pair; chat-template text already has its special tokens.
        for is_pair in (True, False):
            where = [i for i, (_, second) in enumerate(texts) if (second is not None) == is_pair]
            if not where:
                continue
            firsts = [texts[i][0] for i in where]
            seconds = [texts[i][1] for i in where] if is_pair else None
            kwargs = {"add_special_tokens": is_pair}
            full = self.tokenizer(firsts, seconds, truncation=False, **kwargs)
            long = [n for n, ids in enumerate(full["input_ids"]) if len(ids) > self.max_length]
            if long:
                cut = self.tokenizer(
                    [firsts[n] for n in long],
                    [seconds[n] for n in long] if is_pair else None,
                    truncation=True,
                    max_length=self.max_length,
                    **kwargs,
                )
                for m, n in enumerate(long):
                    for key in full:
                        full[key][n] = cut[key][m]
                truncated += len(long)
            for n, i in enumerate(where):
                encodings[i] = {key: full[key][n] for key in full}
        return encodings, truncated

    def _text(self, prompt: Any, response: Any) -> tuple[str, str | None]:
        if isinstance(prompt, str) and isinstance(response, str):
            return prompt, response
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise InputValueError(
                "conversational rows (lists of messages) need a tokenizer with a chat template; set "
                "tokenizer.chat_template or convert the rows to text"
            )
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        messages += response if isinstance(response, list) else [{"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False), None
