"""The project's conventions, defined once: prompt-aware defaults, the openness threshold, the choice sets.

The paper's fix gives a closed prompt (one right answer) a utility that polarises its rewards, ``x``, and an open
prompt (many good answers) one that spreads them, ``-1/x``. A prompt's ``openness`` in [0, 1] says which it is:
open from :data:`OPEN_AT` up. Everything that picks a prompt's utility (the data builder, the collator, the
training config, the CLI, the experiment and the diagnostics) imports these names instead of repeating them.

The choice sets are ``Literal`` types, so that a setting's type, its command-line choices and its check share one
definition; they live here, below torch, so that the command line's ``--help`` is built without importing it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from rewardcollapse.core.errors import InputValueError

__all__ = [
    "CLOSED_UTILITY",
    "OPENNESS",
    "OPEN_AT",
    "OPEN_UTILITY",
    "PROMPT_AWARE",
    "Normalization",
    "PairWeighting",
    "PrecisionSetting",
    "SequenceFormat",
    "SharedPromptSetting",
    "is_open",
    "prompt_utility",
]

PROMPT_AWARE = "prompt-aware"
"""Utility mode: each prompt's utility from its row (``utility`` field, else by its ``openness``)."""

OPENNESS = "openness"
"""Utility mode: the continuous family, each prompt's ``openness`` in [0, 1] sets its utility."""

CLOSED_UTILITY = "x"
"""Prompt-aware utility of closed prompts: its optimal rewards sit at 0 and 1."""

OPEN_UTILITY = "-1/x"
"""Prompt-aware utility of open prompts: its optimal rewards spread evenly over [0, 1]."""

OPEN_AT = 0.5
"""A prompt is open when its openness is at least this, closed below."""

SequenceFormat = Literal["pair", "trl"]
"""How a (prompt, answer) becomes a model's input: the tokenizer's text pair, or TRL's prompt + answer + EOS."""

SharedPromptSetting = Literal["auto", "on", "off"]
"""Whether to encode each prompt once for its answers: where exact and cheaper, always, or never."""

PrecisionSetting = Literal["auto", "fp32", "bf16", "fp16"]
"""The floating-point precision asked for; ``"auto"`` chooses among the other three for the machine."""

PairWeighting = Literal["prompt", "pair"]
"""How the ranking loss weighs a batch: each prompt the same, or each ranked pair the same (TRL)."""

Normalization = Literal["sigmoid", "none"]
"""What the ranking loss does to the raw scores first: squash them to [0, 1] (the paper), or nothing."""


def is_open(openness: float) -> bool:
    """Whether a prompt of this openness counts as open (``openness >= OPEN_AT``)."""
    return openness >= OPEN_AT


def prompt_utility(
    row: Mapping[str, Any],
    setting: str,
    closed_utility: str = CLOSED_UTILITY,
    open_utility: str = OPEN_UTILITY,
) -> str:
    """The utility spec for one prompt under the training's ``utility`` setting (a spec, or :data:`PROMPT_AWARE`).

    A spec is every prompt's utility. Prompt-aware: the row's ``utility`` field if set, else ``open_utility`` when
    the row's openness is at least :data:`OPEN_AT` and ``closed_utility`` below.

    Raises
    ------
    ValueError
        For prompt-aware training on a row with neither a ``utility`` nor a numeric ``openness``, naming the row's
        prompt.

    Examples
    --------
    >>> prompt_utility({"openness": 1.0}, PROMPT_AWARE)
    '-1/x'
    >>> prompt_utility({"openness": 0.2}, "log")
    'log'
    """
    if setting != PROMPT_AWARE:
        return setting
    if row.get("utility") is not None:
        return row["utility"]
    openness = row.get("openness")
    if not isinstance(openness, int | float) or isinstance(openness, bool) or math.isnan(openness):
        raise InputValueError(
            f"prompt-aware training needs `utility` or `openness` on every row; the row with prompt "
            f"{str(row.get('prompt'))[:60]!r} has neither (add them, or train with a fixed utility)"
        )
    return open_utility if is_open(openness) else closed_utility
