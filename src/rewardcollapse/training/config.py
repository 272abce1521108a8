"""Configuration of reward-model training: ``transformers.TrainingArguments`` plus the ranking loss settings."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import torch
from transformers import TrainingArguments

from rewardcollapse.core.conventions import CLOSED_UTILITY, OPEN_AT, OPEN_UTILITY, OPENNESS, PROMPT_AWARE
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.loss import PAIR_WEIGHTINGS
from rewardcollapse.training.collator import SEQUENCE_FORMATS

__all__ = ["OPENNESS", "PROMPT_AWARE", "RankingRewardConfig"]


@dataclass
class RankingRewardConfig(TrainingArguments):
    """Training arguments of :class:`RankingRewardTrainer`: every ``TrainingArguments`` field plus the ones below.

    ``remove_unused_columns`` defaults to False because the collator needs the ranking columns. Launched by
    ``torchrun``/``accelerate launch`` on a machine without CUDA, ``use_cpu`` is switched on so that the processes
    average their gradients (gloo) instead of each training alone.
    """

    utility: str = field(
        default="log",
        metadata={
            "help": "Utility U of the ranking loss for every prompt ('x', 'log', '-1/x', 'x^0.5', '-x^-0.5', "
            f"'logsigmoid'); '{PROMPT_AWARE}': each row's `utility` field, else `closed_utility` for rows with "
            f"openness < {OPEN_AT} and `open_utility` for the others; or 'openness': the continuous family "
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
    normalize: str | None = field(
        default="sigmoid",
        metadata={
            "help": "'sigmoid': squash rewards to [0, 1] before the utility (the paper); 'none' (or None): raw "
            "scores, as TRL's Bradley-Terry loss uses them."
        },
    )
    sequence_format: str = field(
        default="auto",
        metadata={
            "help": "How a (prompt, answer) becomes the model's input. 'trl': one text, prompt + answer with the "
            "end-of-sequence token appended (conversations: the chat template), as TRL's RewardTrainer does; "
            "'pair': the tokenizer's text pair (prompt, answer), for BERT-style cross-encoders; 'auto': 'pair' for "
            "encoder models (BERT, RoBERTa, DeBERTa, ...), 'trl' for the others (decoders). Saved with the model."
        },
    )
    shared_prompt: str = field(
        default="auto",
        metadata={
            "help": "auto | on | off. Encode each prompt once for all its answers: one row [prompt][answer 1]..."
            "[answer K] with a block mask and restarted positions, exact for causal (decoder) models. auto: for "
            "them, in every batch where it costs fewer multiply-adds than separate sequences (long prompts); "
            "encoders keep separate sequences. on: in every batch; a model that cannot take it is refused."
        },
    )
    shared_prompt_row_tokens: int = field(
        default=4096,
        metadata={
            "help": "Longest row of the shared-prompt layout; a prompt whose answers do not fit is split over "
            "rows that each carry it once."
        },
    )
    pair_weighting: str = field(
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
    max_length: int = field(
        default=512,
        metadata={"help": "Tokens per (prompt, response) sequence; longer ones are truncated and counted."},
    )
    forward_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences per forward pass; a step's sequences are sorted by length and run in chunks of this "
            "size, each padded to its own longest. None: one pass over all of them."
        },
    )
    freeze_word_embeddings: bool = field(
        default=False,
        metadata={
            "help": "Keep the input word-embedding matrix fixed: no gradient, no optimiser state for it (on small "
            "backbones it is about half the parameters, and a step is cheaper without it)."
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "help": "auto | fp32 | bf16 | fp16. auto: bf16 on CUDA devices that support it and on CPUs with native "
            "bf16 (AMX or AVX512-BF16), float32 elsewhere (emulated bf16 is about 25x slower). Setting `bf16` or "
            "`fp16` also chooses. Resolved when the config is made; `precision_reason` says why."
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW (TRL's default)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps (TRL's default)."})
    dataset_num_proc: int | None = field(
        default=None, metadata={"help": "Processes that tokenise the datasets (once, before training); None: one."}
    )
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Kept False: the ranking collator reads the prompt, responses and ranks columns."},
    )

    def __post_init__(self) -> None:
        from rewardcollapse.core.utilities import utility

        self._check_numbers()
        names = {"utility": self.utility, "closed_utility": self.closed_utility, "open_utility": self.open_utility}
        for name, spec in names.items():
            if name == "utility" and spec in (PROMPT_AWARE, OPENNESS):
                continue
            try:
                utility(spec)
            except (ValueError, TypeError) as error:
                hint = ", 'prompt-aware' or 'openness'" if name == "utility" else ""
                raise InputValueError(f"`{name}` must be a utility spec{hint}, got {spec!r}: {error}") from error
        self.normalize = "none" if self.normalize is None else self.normalize
        if self.normalize not in ("sigmoid", "none"):
            raise InputValueError(f"`normalize` must be 'sigmoid' or 'none' (None), got {self.normalize!r}")
        if self.sequence_format not in ("auto", *SEQUENCE_FORMATS):
            raise InputValueError(f"`sequence_format` must be 'auto', 'trl' or 'pair', got {self.sequence_format!r}")
        if self.shared_prompt not in ("auto", "on", "off"):
            raise InputValueError(f"`shared_prompt` must be 'auto', 'on' or 'off', got {self.shared_prompt!r}")
        if self.shared_prompt_row_tokens < 2:
            raise InputValueError(f"`shared_prompt_row_tokens` must be at least 2, got {self.shared_prompt_row_tokens}")
        if self.pair_weighting not in PAIR_WEIGHTINGS:
            raise InputValueError(f"`pair_weighting` must be 'prompt' or 'pair', got {self.pair_weighting!r}")
        if self.center_rewards_coefficient is not None and not self.center_rewards_coefficient >= 0:
            raise InputValueError(
                f"`center_rewards_coefficient` must be >= 0 or None, got {self.center_rewards_coefficient}"
            )
        if not self.eps > 0:
            raise InputValueError(f"`eps` must be > 0, got {self.eps}; the paper uses 0.1")
        if self.max_length < 2:
            raise InputValueError(f"`max_length` must be at least 2 tokens, got {self.max_length}")
        if self.forward_batch_size is not None and self.forward_batch_size < 1:
            raise InputValueError(
                f"`forward_batch_size` must be a positive integer or None, got {self.forward_batch_size}"
            )
        self._check_schedule()
        if self.remove_unused_columns:
            raise InputValueError("`remove_unused_columns` must be False: the collator needs the ranking columns")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            # Under torchrun on a CPU-only machine, accelerate sets up data parallelism only with use_cpu=True;
            # without it every process trains alone on its shard and the gradients are never averaged.
            self.use_cpu = True
        self._resolve_precision()
        super().__post_init__()

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
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputValueError(f"`{name}` must be a positive integer, got {value!r}")
        if not self.learning_rate >= 0:
            raise InputValueError(f"`learning_rate` must be >= 0, got {self.learning_rate}")

    def _resolve_precision(self) -> None:
        """Turn ``precision`` (and the ``bf16``/``fp16`` flags) into one machine-checked choice."""
        from rewardcollapse.training.precision import PRECISIONS, choose_precision

        if self.precision not in PRECISIONS:
            raise InputValueError(f"`precision` must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
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

    @property
    def loss_normalize(self) -> str | None:
        """``normalize`` as :func:`rewardcollapse.loss.ranking_loss` takes it."""
        return None if self.normalize == "none" else self.normalize
