"""Configuration of reward-model training: ``transformers.TrainingArguments`` plus the ranking loss settings."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import TrainingArguments

from rewardcollapse.core.conventions import OPENNESS, PROMPT_AWARE
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.settings import ModelInput, ModelLoading, RankingRewardOptions
from rewardcollapse.training.models import TRAINING_DTYPE
from rewardcollapse.training.precision import Precision, choose_precision

__all__ = ["OPENNESS", "PROMPT_AWARE", "RankingRewardConfig"]


@dataclass
class RankingRewardConfig(RankingRewardOptions, ModelInput, ModelLoading, TrainingArguments):
    """Training arguments of :class:`RankingRewardTrainer`: every ``TrainingArguments`` field plus the ranking ones.

    The ranking loss, model input and most used training fields, with their help and defaults, are those of
    :class:`~rewardcollapse.settings.RankingRewardOptions` and :class:`~rewardcollapse.settings.ModelInput`, TRL's
    loading and token fields those of :class:`~rewardcollapse.settings.ModelLoading`; they need no torch (the
    command line's help is built from them). ``remove_unused_columns`` defaults to False because the collator
    needs the ranking columns. Launched by ``torchrun``/``accelerate launch`` on a machine without
    CUDA, ``use_cpu`` is switched on so that the processes average their gradients (gloo) instead of each training
    alone.
    """

    _argument_group_name = "training: every TrainingArguments option and the ranking loss"
    _VALID_DICT_FIELDS: ClassVar[list[str]] = [*TrainingArguments._VALID_DICT_FIELDS, "model_init_kwargs"]
    _uncut_allowed = True

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
        self._check_distributed_settings()  # TrainingArguments' own post-init imports deepspeed when it is named
        TrainingArguments.__post_init__(self)
        self._check_trainer_settings()
        self._check_trl_fields()

    def _check_distributed_settings(self) -> None:
        """Refuse DeepSpeed, FSDP and the Hub where they cannot run, in one line each, before anything is loaded.

        ``deepspeed`` needs its package and, given as a path, the file; ``fsdp`` needs several processes
        (``Trainer`` refuses it in one, once the model is loaded); ``push_to_hub`` needs the Hub, which
        ``HF_HUB_OFFLINE`` says is out of reach (otherwise the Trainer creates the repository when it starts).
        """
        from huggingface_hub import constants
        from transformers.integrations import is_deepspeed_available

        if self.deepspeed:
            if not is_deepspeed_available():
                raise InputValueError(
                    "`deepspeed` needs the deepspeed package, which is not installed here: pip install "
                    "'rewardcollapse[deepspeed]', or leave --deepspeed out (docs/scaling.md)"
                )
            if isinstance(self.deepspeed, str) and not os.path.isfile(self.deepspeed):
                raise InputValueError(
                    f"`deepspeed` {self.deepspeed!r} is not a file; give a DeepSpeed JSON configuration "
                    "(configs/accelerate/ has ZeRO-2 and ZeRO-3 ones for accelerate launch)"
                )
        if self.fsdp and int(os.environ.get("WORLD_SIZE", "1")) < 2:
            raise InputValueError(
                f"`fsdp` {self.fsdp!r} shards the model over several processes, but this is one process: launch "
                "with `accelerate launch --config_file configs/accelerate/fsdp.yaml` (docs/scaling.md), or leave "
                "--fsdp out"
            )
        if self.push_to_hub and constants.HF_HUB_OFFLINE:
            raise InputValueError(
                "`push_to_hub` needs the Hub, but HF_HUB_OFFLINE is set; unset it (and log in with `hf auth login`), "
                "or leave --push_to_hub out and upload the saved folder later"
            )

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        """What ``from_pretrained`` gets when the trainer loads the model by name, beyond ``num_labels=1``.

        ``model_init_kwargs`` as given, weights in float32 unless it names a ``dtype`` (as TRL), and
        ``trust_remote_code`` only when it is set.
        """
        kwargs = dict(self.model_init_kwargs or {})
        kwargs.setdefault("dtype", kwargs.pop("torch_dtype", TRAINING_DTYPE))
        if self.trust_remote_code:
            kwargs.setdefault("trust_remote_code", True)
        return kwargs

    def _check_trl_fields(self) -> None:
        """Check TRL's fields and refuse a feature that cannot run here, before the model is loaded."""
        if not isinstance(self.model_init_kwargs, dict | None):
            raise InputTypeError(
                f"`model_init_kwargs` must be a mapping of from_pretrained arguments (a JSON object on the command "
                f"line), got {self.model_init_kwargs!r}"
            )
        if "num_labels" in (self.model_init_kwargs or {}):
            raise InputValueError(
                "`model_init_kwargs` sets num_labels, but a reward model has one output per sequence: leave it out"
            )
        value = self.pad_to_multiple_of
        if isinstance(value, str) and value != "auto":  # the command line gives text, as TRL's parser reads it
            value = None if value.lower() in ("none", "null") else int(value) if value.isdigit() else value
        if value == "auto":
            value = 128 if self.device.type == "neuron" else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputValueError(
                f"`pad_to_multiple_of` must be a positive number of tokens, 'auto' or None, got {value!r}"
            )
        self.pad_to_multiple_of = value
        if self.activation_offloading and self.device.type != "cuda":
            raise InputValueError(
                f"`activation_offloading` moves activations between a CUDA device and the CPU, but this run is on "
                f"{self.device.type}: leave it off here"
            )
        if self.activation_offloading and importlib.util.find_spec("trl") is None:
            raise InputValueError(
                "`activation_offloading` runs through TRL's offloading: pip install trl, or leave it off"
            )

    def _check_trainer_settings(self) -> None:
        """Refuse what the Trainer would refuse only once the output folder, the data and the model are there.

        The seeds go to ``numpy.random.seed`` (0 to 2**32 - 1); every ``report_to`` logger must be one transformers
        knows and whose package is installed (transformers' own availability checks); ``save_strategy='best'``
        needs evaluations and a metric (``Trainer._validate_args``). What needs the data is
        :meth:`check_evaluation_data`.
        """
        from transformers.integrations import (
            get_available_reporting_integrations,
            get_reporting_integration_callbacks,
            is_flytekit_available,
        )
        from transformers.utils import is_liger_kernel_available

        for name in ("seed", "data_seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32):
                raise InputValueError(
                    f"`{name}` must be an integer from 0 to {2**32 - 1} (numpy's seeds), got {value!r}"
                )
        try:
            get_reporting_integration_callbacks(self.report_to)
        except ValueError as error:
            raise InputValueError(f"`report_to`: {error} Or 'none'.") from error
        # The loggers transformers finds installed; flyte is left out of that list (it is never picked by 'all').
        available = set(get_available_reporting_integrations()) | ({"flyte"} if is_flytekit_available() else set())
        missing = [name for name in self.report_to if name not in available]
        if missing:
            raise InputValueError(
                f"`report_to` {missing[0]!r}: its package is not installed here (installed loggers: "
                f"{sorted(available) or 'none'}); install it, or log to none with --report_to none"
            )
        if self.dataloader_num_workers < 0:
            raise InputValueError(
                f"`dataloader_num_workers` must be 0 (load in the training process) or more, got "
                f"{self.dataloader_num_workers}"
            )
        if self.neftune_noise_alpha is not None and not self.neftune_noise_alpha > 0:
            raise InputValueError(
                f"`neftune_noise_alpha` must be > 0, got {self.neftune_noise_alpha}; leave it out for no noise"
            )
        if self.use_liger_kernel and not is_liger_kernel_available():
            raise InputValueError(
                "`use_liger_kernel` needs the liger-kernel package, which is not installed here: "
                "pip install liger-kernel, or leave --use_liger_kernel out"
            )
        if self.save_strategy == "best" and (self.eval_strategy == "no" or self.metric_for_best_model is None):
            raise InputValueError(
                "`save_strategy` 'best' saves when an evaluation improves `metric_for_best_model`: set "
                "--eval_strategy steps (or epoch), --metric_for_best_model (e.g. loss) and --eval_data"
            )

    def check_evaluation_data(self, given: bool) -> None:
        """Refuse settings that evaluate during training when no evaluation data is ``given``, and the reverse.

        The Trainer raises for an ``eval_strategy`` without an evaluation set once the model is loaded
        (``Trainer._validate_args``); ``eval_steps`` and ``load_best_model_at_end`` do nothing without
        evaluations, so a user who set them meant to evaluate.

        Raises
        ------
        InputValueError
            Naming the setting and the fix (``--eval_data FILE``, or the setting off).
        """
        evaluating = self.eval_strategy != "no"
        if evaluating and not given:
            raise InputValueError(
                f"`eval_strategy` {self.eval_strategy.value!r} evaluates during training, but no evaluation data was "
                "given: pass --eval_data FILE, or --eval_strategy no"
            )
        # Without evaluations transformers leaves eval_steps as given: not None only when the user set it.
        named = [name for name in ("eval_steps", "load_best_model_at_end") if getattr(self, name) not in (None, False)]
        if named and not evaluating:
            raise InputValueError(
                f"`{named[0]}` needs evaluations during training, but `eval_strategy` is 'no': add --eval_strategy "
                "steps (or epoch) with --eval_data FILE, or drop it"
            )

    def _check_numbers(self) -> None:
        """Refuse text where a field takes a number or a flag (a YAML ``1e-4`` is text; a CLI value is converted).

        ``TrainingArguments`` does not check types, so ``max_steps: "abc"`` would fail deep inside training; nor does
        it refuse ``max_steps: 2.0`` (a TypeError in the loop) or ``max_steps: true`` (one step): a whole-number field
        takes no float or flag, a number field no flag.
        """
        for spec in dataclasses.fields(self):
            value, default, annotation = getattr(self, spec.name), spec.default, str(spec.type)
            optional_number = (
                default is None and "str" not in annotation and ("int" in annotation or "float" in annotation)
            )
            numeric = "str" not in annotation and "bool" not in annotation
            whole = numeric and "int" in annotation and "float" not in annotation
            if whole and isinstance(value, bool | float):  # YAML's 2.0, !!float 2 or true; the loop needs an int
                fix = f"write {int(value)}" if isinstance(value, float) and value.is_integer() else "give one"
                raise InputTypeError(f"`{spec.name}` must be a whole number, got {value!r}; {fix}")
            if numeric and "float" in annotation and isinstance(value, bool):
                raise InputTypeError(f"`{spec.name}` must be a number, got {value!r}; give one")
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

    def _device_type(self) -> str:
        return "cpu" if self.use_cpu or not torch.cuda.is_available() else "cuda"

    def chosen_precision(self) -> Precision:
        """The precision these arguments resolved to, with the reason it was chosen (``"auto"`` is resolved once)."""
        return Precision(self.precision, self._device_type(), self.precision_reason)

    def _resolve_precision(self) -> None:
        """Turn ``precision`` (and the ``bf16``/``fp16`` flags) into one machine-checked choice."""
        flagged = [name for name in ("bf16", "fp16") if getattr(self, name)]
        if len(flagged) > 1 or (flagged and self.precision not in ("auto", flagged[0])):
            raise InputValueError(
                f"`precision` {self.precision!r} contradicts {' and '.join(f'{n}=True' for n in flagged)}; set one"
            )
        device = self._device_type()
        chosen = choose_precision(flagged[0] if flagged else self.precision, device=device)
        self.precision, self.precision_reason = chosen.name, chosen.reason
        self.bf16, self.fp16 = chosen.name == "bf16", chosen.name == "fp16"
        if device == "cpu" and chosen.name != "fp32":
            self.use_cpu = True  # the Trainer refuses mixed precision on a CPU without it
        if device == "cpu":
            self.dataloader_pin_memory = False  # nothing to pin for; torch warns at every loader otherwise
