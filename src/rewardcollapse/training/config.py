"""Configuration of reward-model training: ``transformers.TrainingArguments`` plus the ranking loss settings."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.settings import ModelInput, RankingRewardOptions
from rewardcollapse.training.precision import choose_precision

__all__ = ["OPENNESS", "PROMPT_AWARE", "RankingRewardConfig"]


@dataclass
class RankingRewardConfig(RankingRewardOptions, ModelInput, TrainingArguments):
    """Training arguments of :class:`RankingRewardTrainer`: every ``TrainingArguments`` field plus the ranking ones.

    The ranking loss, model input and most used training fields, with their help and defaults, are those of
    :class:`~rewardcollapse.settings.RankingRewardOptions` and :class:`~rewardcollapse.settings.ModelInput`, which
    need no torch (the command line's help is built from them). ``remove_unused_columns`` defaults to False because
    the collator needs the ranking columns. Launched by ``torchrun``/``accelerate launch`` on a machine without
    CUDA, ``use_cpu`` is switched on so that the processes average their gradients (gloo) instead of each training
    alone.
    """

    _argument_group_name = "training: every TrainingArguments option and the ranking loss"

    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the ranking collator reads the prompt, responses and ranks columns."},
    )

    def __post_init__(self) -> None:
        self._check_numbers()
        self.check_model_input()
        self.check_options()
        if self.remove_unused_columns:
            raise InputValueError("`remove_unused_columns` must be False: the collator needs the ranking columns")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Under torchrun on a CPU-only machine, accelerate sets up data parallelism only with use_cpu=True;
            # without it every process trains alone on its shard and the gradients are never averaged.
            self.use_cpu = True
        self._resolve_precision()
        TrainingArguments.__post_init__(self)

    def _check_numbers(self) -> None:
        """Refuse text where a field takes a number or a flag (a YAML ``1e-4`` is text; a CLI value is converted).

        ``TrainingArguments`` does not check types, so ``max_steps: "abc"`` would fail deep inside training.
        """
        for spec in dataclasses.fields(self):
            value, default, annotation = getattr(self, spec.name), spec.default, str(spec.type)
            optional_number = (
                default is None and "str" not in annotation and ("int" in annotation or "float" in annotation)
            )
            if not isinstance(value, str) or not (type(default) in (int, float, bool) or optional_number):
                continue
            flag = type(default) is bool
            kind = "true or false" if flag else "a number"
            hint = ""
            if not flag:
                try:
                    float(value)
                    hint = " (YAML reads 1e-4 as text: write 1.0e-4)" if "e" in value.lower() else " (drop the quotes)"
                except ValueError:
                    pass
            raise InputTypeError(f"`{spec.name}` must be {kind}, got the text {value!r}{hint}")

    def _resolve_precision(self) -> None:
        """Turn ``precision`` (and the ``bf16``/``fp16`` flags) into one machine-checked choice."""
        flagged = [name for name in ("bf16", "fp16") if getattr(self, name)]
        if len(flagged) > 1 or (flagged and self.precision not in ("auto", flagged[0])):
            raise InputValueError(
                f"`precision` {self.precision!r} contradicts {' and '.join(f'{n}=True' for n in flagged)}; set one"
            )
        device = "cpu" if self.use_cpu or not torch.cuda.is_available() else "cuda"
        chosen = choose_precision(flagged[0] if flagged else self.precision, device=device)
        self.precision, self.precision_reason = chosen.name, chosen.reason
        self.bf16, self.fp16 = chosen.name == "bf16", chosen.name == "fp16"
        if device == "cpu" and chosen.name != "fp32":
            self.use_cpu = True  # the Trainer refuses mixed precision on a CPU without it
        if device == "cpu":
            self.dataloader_pin_memory = False  # nothing to pin for; torch warns at every loader otherwise
