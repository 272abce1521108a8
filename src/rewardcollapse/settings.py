"""The settings of training and scoring, each defined once with its help, in dataclasses that need no torch.

The command line is parsed from these dataclasses (``transformers.HfArgumentParser``), so ``rewardcollapse train
--help`` lists them without importing torch or transformers; the training config
:class:`~rewardcollapse.training.RankingRewardConfig` gains :class:`RankingRewardOptions` by inheritance on top of
``transformers.TrainingArguments``, and :func:`~rewardcollapse.training.score_file` checks its settings with
:class:`ModelInput`. A choice is a ``Literal`` type (:mod:`rewardcollapse.core.conventions`), so the parser's
choices, the help and the check share one definition; :func:`check_choices` is that check.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from rewardcollapse.core.checks import check_positive_int
from rewardcollapse.core.conventions import (
    CLOSED_UTILITY,
    OPEN_AT,
    OPEN_UTILITY,
    OPENNESS,
    PROMPT_AWARE,
    Normalization,
    PairWeighting,
    PrecisionSetting,
    SequenceFormat,
    SharedPromptSetting,
)
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data.loaders import InputFormat

__all__ = [
    "MAX_LENGTH",
    "DataSource",
    "ModelInput",
    "ModelLoading",
    "OverLong",
    "RankingRewardOptions",
    "ScoreJob",
    "TrainJob",
    "check_choices",
    "check_collapse_watch",
    "check_lora_alpha",
    "field_help",
]

OverLong = Literal["truncate", "drop"]
"""What training does with a sequence longer than ``max_length``: cut it, or leave it out as TRL does."""

MAX_LENGTH = 512
"""Tokens per (prompt, answer) sequence, in training and scoring alike, unless set (BERT's 512 positions)."""


@functools.cache
def _choices(cls: type) -> dict[str, tuple[Any, ...]]:
    """The fields of a dataclass whose type is a ``Literal`` (optionally or None), and their allowed values."""
    found = {}
    for name, hint in typing.get_type_hints(cls).items():
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        for option in typing.get_args(hint) if union else (hint,):
            if typing.get_origin(option) is Literal:
                found[name] = typing.get_args(option) + ((None,) if type(None) in typing.get_args(hint) else ())
    return found


def check_choices(settings: Any, cls: type | None = None) -> None:
    """Refuse a value of a ``Literal``-typed field of ``cls`` (default: ``type(settings)``) that is not a choice.

    Raises
    ------
    InputValueError
        Naming the field, the allowed values and the value given.
    """
    for name, allowed in _choices(cls or type(settings)).items():
        value = getattr(settings, name)
        if value not in allowed:
            names = [repr(choice) for choice in allowed]
            choices = " or ".join(names) if len(names) == 2 else "one of " + ", ".join(names)
            hint = "; write 'none' for off" if value is None and "none" in allowed else ""
            raise InputValueError(f"`{name}` must be {choices}, got {value!r}{hint}")


def check_lora_alpha(value: Any, name: str = "lora_alpha") -> None:
    """Refuse a LoRA ``alpha`` that is not a number > 0: the adapters' output is scaled by alpha / r.

    Raises
    ------
    InputValueError
        Naming ``name``, the value and the fix: with alpha 0 the adapters train but change nothing.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputValueError(
            f"`{name}` must be a number > 0, got {value!r}: LoRA scales the adapters' output by lora_alpha / r, so "
            "0 trains adapters that change nothing (and a negative alpha flips them); use e.g. 32 (TRL's default)"
        )


@dataclass
class ModelInput:
    """How a reward model reads ranked answers, in training and in scoring alike."""

    _argument_group_name = "model input"

    sequence_format: Literal["auto", SequenceFormat] = field(
        default="auto",
        metadata={
            "help": "How a (prompt, answer) becomes the model's input. 'trl': one text, prompt + answer with the "
            "end-of-sequence token appended (conversations: the chat template), as TRL's RewardTrainer does; "
            "'pair': the tokenizer's text pair (prompt, answer), for BERT-style cross-encoders; 'auto': as the model "
            "was trained (its saved settings), else 'pair' for encoders (BERT, RoBERTa, DeBERTa, ...) and 'trl' for "
            "decoders. Saved with a trained model."
        },
    )
    shared_prompt: SharedPromptSetting = field(
        default="auto",
        metadata={
            "help": "Encode each prompt once for all its answers, exact for causal (decoder) models: the prompts "
            "cached and their answers run on the cache, or one row [prompt][answer 1]...[answer K] per prompt with a "
            "block mask. auto: training runs its first 3 to 9 batches every way (separate, cached, rows) and keeps the "
            "fastest (untimed where the estimate says sharing saves under a tenth); scoring uses the multiply-add "
            "estimate per batch; encoders keep separate sequences. on: in every batch; a model that cannot take it "
            "is refused. off: never."
        },
    )
    shared_prompt_row_tokens: int = field(
        default=4096,
        metadata={
            "help": "Longest row of the shared-prompt layout; a prompt whose answers do not fit is split over "
            "rows that each carry it once."
        },
    )
    max_length: int | None = field(
        default=MAX_LENGTH,
        metadata={
            "help": "Tokens per (prompt, answer) sequence; longer ones are truncated and counted (in training: "
            "see over_long). None (training only): no cut."
        },
    )
    forward_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per forward pass; a batch's sequences are sorted by length and run in chunks of this "
            "size, each padded to its own longest. None: one pass over all of them."
        },
    )
    precision: PrecisionSetting = field(
        default="auto",
        metadata={
            "help": "auto: bf16 on CUDA devices that support it and on CPUs with native bf16 (AMX or AVX512-BF16), "
            "float32 elsewhere (emulated bf16 is about 25x slower); fp32, bf16 (autocast) or fp16 (CUDA only). In "
            "training the bf16 and fp16 flags also choose; precision_reason says why a precision was chosen."
        },
    )

    def __post_init__(self) -> None:
        self.check_model_input()

    _uncut_allowed = False
    """Whether ``max_length=None`` (no cut) is allowed: in training, as in TRL; scoring always has a limit."""

    def check_model_input(self) -> None:
        """Refuse a choice that is none of its field's, a length below 2 tokens, or a batch size below 1."""
        check_choices(self, ModelInput)
        for name in ("max_length", "shared_prompt_row_tokens"):
            value = getattr(self, name)
            if name == "max_length" and value is None and self._uncut_allowed:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise InputValueError(f"`{name}` must be at least 2 tokens, got {value!r}")
        check_positive_int(self.forward_batch_size, "forward_batch_size", optional=True)


@dataclass
class ModelLoading:
    """The fields of ``trl.RewardConfig`` on loading the model and its tokens, with TRL's meaning.

    :class:`~rewardcollapse.training.RankingRewardConfig` inherits them (and checks them once the device is known).
    """

    _argument_group_name = "model loading and tokens (TRL's RewardConfig fields)"

    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments for AutoModelForSequenceClassification.from_pretrained when the trainer "
            "loads the model by name (dtype, revision, attn_implementation, ...; revision also for the tokenizer). "
            "Default dtype: float32, as in TRL. A JSON object on the command line."
        },
    )
    trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "Let a model or tokenizer loaded by name run the Python code it ships (from_pretrained's "
            "trust_remote_code); passed on only when set."
        },
    )
    chat_template_path: str | None = field(
        default=None,
        metadata={
            "help": "Set the tokenizer's chat template: a .jinja/.j2 file, or a tokenizer (folder or Hub name) "
            "whose chat template is copied. Special tokens the template uses must already be in the vocabulary."
        },
    )
    eos_token: str | None = field(
        default=None,
        metadata={
            "help": "End-of-sequence token appended in the trl sequence format (must be in the vocabulary); None: "
            "the tokenizer's."
        },
    )
    pad_token: str | None = field(
        default=None,
        metadata={
            "help": "Padding token (must be in the vocabulary); None: the tokenizer's, else its end-of-sequence "
            "token. (TRL deprecates it for setting tokenizer.pad_token.)"
        },
    )
    pad_to_multiple_of: int | str | None = field(
        default=None,
        metadata={
            "help": "Pad each batch's sequences to a multiple of this many tokens; 'auto': 128 on Neuron (which "
            "compiles once per shape), none elsewhere, as TRL; None: no extra padding."
        },
    )
    activation_offloading: bool = field(
        default=False,
        metadata={
            "help": "Move activations to CPU memory during the forward pass and back for the backward pass "
            "(TRL's mechanism; CUDA only)."
        },
    )


@dataclass
class RankingRewardOptions:
    """The ranking loss and the most used training settings, with this project's help and defaults.

    :class:`~rewardcollapse.training.RankingRewardConfig` inherits them and :class:`ModelInput` on top of
    ``transformers.TrainingArguments`` (whose fields of the same name they replace, as TRL's ``RewardConfig``
    replaces ``learning_rate``); the command line lists them first and the other ``TrainingArguments`` fields
    behind ``--help-all``.
    """

    _argument_group_name = "training and the ranking loss (every TrainingArguments option: --help-all)"

    output_dir: str | None = field(
        default=None,
        metadata={"help": "Folder for checkpoints and the trained model (required).", "aliases": ["--output"]},
    )
    max_steps: int = field(
        default=-1,
        metadata={"help": "Optimiser steps to train; -1: train for num_train_epochs.", "aliases": ["--steps"]},
    )
    num_train_epochs: float = field(
        default=3.0,
        metadata={"help": "Passes over the training data when max_steps is -1.", "aliases": ["--epochs"]},
    )
    per_device_train_batch_size: int = field(
        default=8, metadata={"help": "Prompts per batch on each device.", "aliases": ["--batch-size"]}
    )
    gradient_accumulation_steps: int = field(
        default=1,
        metadata={
            "help": "Batches whose gradients add up to one optimiser step.",
            "aliases": ["--gradient-accumulation"],
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW (TRL's default)."})
    seed: int = field(default=42, metadata={"help": "Seeds the score head's initial weights and the data order."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps (TRL's default)."})
    save_steps: float = field(
        default=500, metadata={"help": "Save a checkpoint every N steps (a fraction < 1: of the total steps)."}
    )
    eval_steps: float | None = field(
        default=None,
        metadata={"help": "With --eval_strategy steps: evaluate every N steps; None: every logging_steps."},
    )
    utility: str = field(
        default="log",
        metadata={
            "help": "Utility U of the ranking loss for every prompt ('x', 'log', '-1/x', 'x^0.5', '-x^-0.5', "
            f"'logsigmoid'); '{PROMPT_AWARE}': each row's `utility` field, else `closed_utility` for rows with "
            f"openness < {OPEN_AT} and `open_utility` for the others; or '{OPENNESS}': the continuous family "
            "U_o(x) = (x^(1-2o) - 1)/(1-2o) with each row's openness o (x at 0, log at 1/2, -1/x at 1)."
        },
    )
    closed_utility: str = field(
        default=CLOSED_UTILITY,
        metadata={
            "help": f"Prompt-aware training: utility of closed prompts (openness < {OPEN_AT}); "
            f"'{CLOSED_UTILITY}' polarises."
        },
    )
    open_utility: str = field(
        default=OPEN_UTILITY,
        metadata={
            "help": f"Prompt-aware training: utility of open prompts (openness >= {OPEN_AT}); '{OPEN_UTILITY}' spreads."
        },
    )
    eps: float = field(
        default=0.1,
        metadata={"help": "Shift of the utilities singular at 0 (log, x^a, -x^-a, -1/x): U(x + eps) - U(eps)."},
    )
    normalize: Normalization = field(
        default="sigmoid",
        metadata={
            "help": "'sigmoid': squash rewards to [0, 1] before the utility (the paper); 'none': raw scores, as "
            "TRL's Bradley-Terry loss uses them."
        },
    )
    pair_weighting: PairWeighting = field(
        default="prompt",
        metadata={
            "help": "'prompt': each prompt weighs the same in the loss (the mean over prompts of the mean over their "
            "ranked pairs); 'pair': each ranked pair weighs the same (TRL's mean over its pairwise rows)."
        },
    )
    center_rewards_coefficient: float | None = field(
        default=None,
        metadata={
            "help": "Add this times the mean over ranked pairs of (r_i + r_j)^2 to the loss, pulling rewards toward "
            "zero mean, as TRL's option of the same name (Eisenstein et al., 2023 recommend 0.01). None: off."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={"help": "Switch the model's dropout off, as TRL does by default (reward gaps are small)."},
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the input word-embedding matrix fixed: no gradient, no optimiser state for it (on small "
            "backbones it is about half the parameters, and a step is cheaper without it)."
        },
    )
    freeze_layers: int = field(
        default=0,
        metadata={
            "help": "Keep the embeddings and the bottom N transformer layers fixed (no gradient, no optimiser state): "
            "the backward pass stops at layer N, so a step costs less (on the shipped 6-layer MiniLM, 3 frozen "
            "layers make a step about 0.7 times as long); 0: train every layer."
        },
    )
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes that tokenise the datasets (once, before training); None: one."}
    )
    over_long: OverLong = field(
        default="truncate",
        metadata={
            "help": "Training sequences longer than max_length. 'truncate': cut them (keeping the end-of-sequence "
            "token in the trl sequence format) and count them; 'drop': leave each such answer out, and with it "
            "every ranked pair it is in (TRL's way: it drops the pairwise row), counted and logged; a ranking left "
            "with fewer than two answers is dropped."
        },
    )
    group_pairs: bool = field(
        default=True,
        metadata={
            "help": "TRL pairwise rows of one prompt: True merges them into one ranking (each answer scored once); "
            "False keeps each row its own two-answer ranking, so a batch holds per_device_train_batch_size pair "
            "rows and the loss per step is TRL's."
        },
    )

    def __post_init__(self) -> None:
        self.check_options()

    def check_options(self) -> None:
        """Check the fields defined here (``TrainingArguments`` checks its own when it is one)."""
        from rewardcollapse.core.utilities import utility

        check_choices(self, RankingRewardOptions)
        for name in ("utility", "closed_utility", "open_utility"):
            spec = getattr(self, name)
            if name == "utility" and spec in (PROMPT_AWARE, OPENNESS):
                continue
            try:
                utility(spec)
            except (ValueError, TypeError) as error:
                hint = f", '{PROMPT_AWARE}' or '{OPENNESS}'" if name == "utility" else ""
                raise InputValueError(f"`{name}` must be a utility spec{hint}, got {spec!r}: {error}") from error
        if not self.eps > 0:
            raise InputValueError(f"`eps` must be > 0, got {self.eps}; the paper uses 0.1")
        if isinstance(self.freeze_layers, bool) or not isinstance(self.freeze_layers, int) or self.freeze_layers < 0:
            raise InputValueError(
                f"`freeze_layers` must be a whole number >= 0 (0: train every layer), got {self.freeze_layers!r}"
            )
        if self.center_rewards_coefficient is not None and not self.center_rewards_coefficient >= 0:
            raise InputValueError(
                f"`center_rewards_coefficient` must be >= 0 or None, got {self.center_rewards_coefficient}"
            )
        self._check_schedule()

    def _check_schedule(self) -> None:
        """Refuse the step, epoch and batch settings that would train nothing, or something else than asked.

        The Trainer itself turns ``max_steps=0`` into one step and a negative one into epochs, and divides by a
        zero accumulation; each gets a message naming the setting instead.
        """
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputValueError(
                f"`max_steps` (--steps) must be at least 1, or -1 to train for `num_train_epochs`; got {self.max_steps}"
            )
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise InputValueError(
                f"`num_train_epochs` (--epochs) must be > 0 when no `max_steps` is set; got {self.num_train_epochs}"
            )
        check_positive_int(self.per_device_train_batch_size, "per_device_train_batch_size")
        check_positive_int(self.gradient_accumulation_steps, "gradient_accumulation_steps")
        if not self.learning_rate >= 0:
            raise InputValueError(f"`learning_rate` must be >= 0, got {self.learning_rate}")


def check_collapse_watch(collapse_every: Any, collapse_data: Any, eval_data: Any) -> None:
    """Refuse a collapse interval below 1 or without held-out rankings, and held-out rankings without an interval."""
    check_positive_int(collapse_every, "collapse_every", optional=True)
    if collapse_every is not None and collapse_data is None and eval_data is None:
        raise InputValueError(
            "`collapse_every` needs held-out rankings to measure collapse on: give `collapse_data` "
            "(--collapse_data FILE) or `eval_data`"
        )
    if collapse_data is not None and collapse_every is None:
        raise InputValueError(
            "`collapse_data` needs `collapse_every` (--collapse_every N): the steps between two measurements"
        )


@dataclass(kw_only=True)
class DataSource:
    """Where ranking data comes from and how its rows are read."""

    data: str = field(
        metadata={"help": "Ranking data: a JSONL, JSON, Parquet or CSV file, a datasets folder, or a Hub dataset name."}
    )
    input_format: Literal["auto", InputFormat] = field(
        default="auto", metadata={"help": "Row format of the data; auto: read from its columns."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Drop invalid rows and report them per reason, instead of stopping."}
    )

    def __post_init__(self) -> None:
        check_choices(self, DataSource)


@dataclass(kw_only=True)
class TrainJob(DataSource):
    """What a training job reads, beside its :class:`RankingRewardOptions`: the ``rewardcollapse train`` options."""

    _argument_group_name = "data and model"

    eval_data: str | None = field(default=None, metadata={"help": "Evaluation data, in the same formats."})
    collapse_every: int | None = field(
        default=None,
        metadata={
            "help": "Measure collapse on held-out rankings (--collapse_data, else --eval_data) before the first step, "
            "every N steps and at the end, and log it as collapse/... (docs/training.md). None: not measured."
        },
    )
    collapse_data: str | None = field(
        default=None,
        metadata={"help": "Held-out rankings for --collapse_every, in the same formats; default: --eval_data."},
    )
    model: str | None = field(
        default=None,
        metadata={"help": "Hub name or local path of the backbone; default: the shipped all-MiniLM-L6-v2."},
    )
    resume: str | None = field(
        default=None,
        metadata={
            "help": "Continue from this checkpoint folder; a bare --resume: from the newest one in the output folder.",
            "nargs": "?",
            "const": "latest",
        },
    )
    lora_r: int | None = field(
        default=None,
        metadata={
            "help": "Train LoRA adapters of this rank (peft) instead of every weight; the score head trains in "
            "full. None: no LoRA."
        },
    )
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha (TRL's default)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA path (TRL's default)."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Module names to adapt, e.g. q_proj v_proj; default: peft's choice for the architecture "
            "('all-linear' for the linear layers of any model)."
        },
    )
    merge_lora: bool = field(
        default=False,
        metadata={
            "help": "After LoRA training, merge the adapters into the weights and save a plain model that "
            "AutoModelForSequenceClassification loads."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_collapse_watch(self.collapse_every, self.collapse_data, self.eval_data)
        check_positive_int(self.lora_r, "lora_r", optional=True)
        check_lora_alpha(self.lora_alpha)
        if not 0 <= self.lora_dropout < 1:
            raise InputValueError(f"`lora_dropout` must be in [0, 1), got {self.lora_dropout}")
        if self.merge_lora and self.lora_r is None:
            raise InputValueError("--merge_lora needs LoRA training: give --lora_r as well")

    def peft_config(self) -> Any:
        """The ``peft.LoraConfig`` these options ask for, or None without ``lora_r``."""
        if self.lora_r is None:
            return None
        try:
            from peft import LoraConfig, TaskType
        except ImportError as error:
            raise InputValueError("LoRA training needs the peft package: pip install peft") from error
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
        )


@dataclass(kw_only=True)
class ScoreJob(DataSource):
    """What ``rewardcollapse score`` reads and writes, beside its :class:`ModelInput`."""

    _argument_group_name = "data and model"

    model: str = field(metadata={"help": "Trained model folder or Hub name."})
    output: str = field(
        metadata={
            "help": "JSONL file: each row plus its rewards and normalized_rewards (a TRL pairwise row: "
            "chosen_reward, rejected_reward and their normalized twins, in the input's row order)."
        }
    )
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "For a --model folder of LoRA adapters: the base model to load them on (Hub name or folder), "
            "instead of the base_model_name_or_path in its adapter_config.json (when that base was moved or deleted)."
        },
    )
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive_int(self.batch_size, "batch_size")


def field_help(cls: type, name: str) -> str:
    """The help text of field ``name`` of dataclass ``cls``: for an option that sets that field from elsewhere."""
    return {f.name: f for f in dataclasses.fields(cls)}[name].metadata["help"]
