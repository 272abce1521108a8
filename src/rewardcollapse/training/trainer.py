r"""``RankingRewardTrainer``: a ``transformers.Trainer`` that scores each answer once and trains on all its pairs.

TRL's ``RewardTrainer`` and the paper's code feed the model each ranked pair's two sequences, so a prompt with
``K = 8`` ranked answers costs :math:`2 \binom{8}{2} = 56` forward passes. Here the collator tokenises each
(prompt, answer) once, :func:`~rewardcollapse.training.scoring.score_batch` runs one forward pass per answer, and
:func:`~rewardcollapse.loss.ranking_loss` forms every pair from the ``(B, K)`` scores: 8 passes per prompt.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from typing import Any

import numpy as np
import torch
from scipy import special
from transformers import ProgressCallback, Trainer

from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.data.loaders import max_responses
from rewardcollapse.diagnostics import ranking_metrics
from rewardcollapse.loss import ranking_loss
from rewardcollapse.training.backbone import backbone_label, loading_model
from rewardcollapse.training.collator import RankingCollator, tokenize_rankings
from rewardcollapse.training.config import OPENNESS, RankingRewardConfig
from rewardcollapse.training.precision import score_head_in_float32
from rewardcollapse.training.scoring import score_batch

__all__ = [
    "RankingProgressCallback",
    "RankingRewardTrainer",
    "fit_max_length",
    "load_reward_model",
    "quiet_transformers",
]

_RANKING_COLUMNS = ("prompt", "responses")
_log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' and datasets' progress bars and info reports inside the block, then restore them."""
    import datasets
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    datasets_bars = datasets.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()


@functools.cache
def _announce_new_head(backbone: str, keys: tuple[str, ...]) -> None:
    """Say once per process that a backbone got a new score head (loading it again says nothing new)."""
    _log.info(
        "%s: new score head (%s), initialised at random and trained by the ranking loss", backbone, ", ".join(keys)
    )


def load_reward_model(name_or_path: str, *, dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` for reward modelling: a sequence classifier with one output.

    Works with any Hub name or local path that ``AutoModelForSequenceClassification`` knows. Tokenizers without a
    padding token (GPT-style) get their end-of-sequence token as padding, and the model config is told, so that
    the classifier reads the last real token. A backbone without a score head (the usual start) gets a new one:
    that is logged in one line (logger ``rewardcollapse``) instead of transformers' load report, which is kept for
    the unexpected cases (backbone weights missing or left over).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    with loading_model(name_or_path):
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                name_or_path, num_labels=1, dtype=dtype, output_loading_info=True
            )
    backbone = f"{model.base_model_prefix}."
    head = sorted(key for key in info["missing_keys"] if not key.startswith(backbone))
    unexpected = sorted(set(info["missing_keys"]) - set(head)) + sorted(info["unexpected_keys"])
    if head:
        _announce_new_head(backbone_label(name_or_path), tuple(head))
    if unexpected:
        warnings.warn(
            f"{name_or_path}: backbone weights missing from the checkpoint (initialised at random) or left unused: "
            f"{unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}",
            UserWarning,
            stacklevel=2,
        )
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise InputValueError(
                f"the tokenizer of {name_or_path!r} has neither a pad nor an eos token; set pad_token"
            )
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def fit_max_length(model: Any, max_length: int) -> int:
    """``max_length``, lowered with a warning to the model's number of positions when it has fewer.

    A BERT-like model with 512 learned positions fails with a shape error on longer inputs; truncating to what it
    can read (and counting the truncation) is what a user means.
    """
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < max_length:
        warnings.warn(
            f"`max_length` {max_length} exceeds the model's {limit} positions; sequences are cut at {limit}",
            UserWarning,
            stacklevel=2,
        )
        return limit
    return max_length


def _prepare_dataset(dataset: Any, name: str, args: RankingRewardConfig, tokenizer: Any, max_length: int) -> Any:
    """A ranking ``datasets.Dataset`` with its token columns (:func:`tokenize_rankings`, once); others as they are."""
    columns = getattr(dataset, "column_names", None)
    if dataset is None or columns is None:
        return dataset  # a plain list of rows: the collator tokenises each batch
    missing = [c for c in _RANKING_COLUMNS if c not in columns]
    if missing:
        raise InputValueError(
            f"`{name}` lacks the ranking columns {missing}; load it with rewardcollapse.data.load_rankings"
        )
    if "input_ids" in columns:
        return dataset
    if tokenizer is None:
        raise InputValueError(f"`processing_class` (the tokenizer) is needed to tokenise `{name}`")
    with args.main_process_first(desc=f"tokenizing {name}"):
        return tokenize_rankings(
            dataset,
            tokenizer,
            max_length=max_length,
            utility=args.utility,
            closed_utility=args.closed_utility,
            open_utility=args.open_utility,
            name=name,
            num_proc=args.dataset_num_proc,
        )


class RankingProgressCallback(ProgressCallback):
    """The Trainer's progress bar, named by ``args.run_name``, showing the latest loss instead of printing log lines.

    The logged values stay in ``trainer.state.log_history`` (and reach any reporting integration); only the raw log
    dictionaries that the default bar writes between its updates are left out.
    """

    def on_train_begin(self, args, state, control, **kwargs):
        """Open the bar, named by the run."""
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            name = args.run_name or "training"
            self.training_bar = tqdm(total=state.max_steps, desc=name, unit="step", dynamic_ncols=True)
        self.current_step = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        """Show the latest training loss beside the bar."""
        if state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{logs['loss']:.4g}", refresh=False)


class RankingRewardTrainer(Trainer):
    """Train a reward model with the listwise ranking loss, one forward pass per answer.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A sequence classifier with one output (see :func:`load_reward_model`).
    args : RankingRewardConfig
        Training arguments, including the utility (fixed or ``"prompt-aware"``), ``eps``, ``normalize`` and
        ``max_length``.
    train_dataset, eval_dataset : datasets.Dataset, optional
        Ranking-format data (:func:`rewardcollapse.data.load_rankings`).
    processing_class : transformers.PreTrainedTokenizerBase
        The tokenizer; saved with the model.
    data_collator : RankingCollator, optional
        Default: a :class:`RankingCollator` from ``args``, as wide as the datasets' largest ranking.
    compute_metrics : callable, optional
        Default: pairwise accuracy, mean Kendall tau, reward mean, deviation and spread of the (normalised)
        rewards, prefixed ``eval_`` by the Trainer.
    **kwargs
        Passed to ``transformers.Trainer``.
    """

    def __init__(
        self,
        model: Any = None,
        args: RankingRewardConfig | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        data_collator: Any = None,
        compute_metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, RankingRewardConfig):
            raise InputTypeError(f"`args` must be a RankingRewardConfig, got {type(args).__name__}")
        if processing_class is None and data_collator is None:
            raise InputValueError("`processing_class` (the tokenizer) is needed to build the default collator")
        max_length = fit_max_length(model, args.max_length)
        train_dataset = _prepare_dataset(train_dataset, "train_dataset", args, processing_class, max_length)
        eval_dataset = _prepare_dataset(eval_dataset, "eval_dataset", args, processing_class, max_length)
        if args.freeze_word_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        if args.bf16 or args.fp16:
            score_head_in_float32(model)
        if data_collator is None:
            data_collator = RankingCollator(
                processing_class,
                max_length=max_length,
                max_answers=max(2, max_responses(train_dataset, eval_dataset)),
                utility=args.utility,
                closed_utility=args.closed_utility,
                open_utility=args.open_utility,
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            compute_metrics=compute_metrics or self._ranking_metrics,
            **kwargs,
        )
        if self.args.world_size > 1 and self.accelerator.distributed_type.value == "NO":
            raise InputValueError(
                f"{self.args.world_size} processes were launched but accelerate set up no data parallelism, so "
                "gradients would not be averaged; on CPU pass use_cpu=True (CUDA: check the launcher)"
            )
        if any(type(callback) is ProgressCallback for callback in self.callback_handler.callbacks):
            self.remove_callback(ProgressCallback)
            self.add_callback(RankingProgressCallback)
        # The loss is a mean over prompts, not a sum over labelled tokens: the Trainer must divide by the
        # accumulation steps itself instead of expecting a `num_items_in_batch` normalisation.
        self.model_accepts_loss_kwargs = False
        self._truncated = torch.zeros(2, dtype=torch.long)  # (truncated, total) training sequences

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Score every answer once, then the ranking loss over all the batch's ranked pairs."""
        truncated = inputs.pop("num_truncated", None)
        if model.training and truncated is not None:
            self._truncated += torch.tensor([int(truncated), len(inputs["answer_slot"])])
        rewards = score_batch(model, inputs, forward_batch_size=self.args.forward_batch_size)
        loss = ranking_loss(
            rewards,
            utility=inputs["utility"],
            family="openness" if self.args.utility == OPENNESS else None,
            pairs=inputs["pairs"],
            mask=inputs["answer_mask"],
            normalize=self.args.loss_normalize,
            eps=self.args.eps,
        )
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Loss, ``(B, K)`` rewards (NaN for padding answers) and the ``(B, K, K)`` pair matrix as labels."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        loss = loss.detach()
        if prediction_loss_only:
            return loss, None, None
        rewards = outputs["rewards"].detach().float().masked_fill(~inputs["answer_mask"], float("nan"))
        return loss, rewards, inputs["pairs"].to(torch.uint8)

    def _ranking_metrics(self, prediction) -> dict[str, float]:
        rewards = np.asarray(prediction.predictions, dtype=float)
        if self.args.loss_normalize == "sigmoid":
            rewards = special.expit(rewards)
        return ranking_metrics(rewards, np.asarray(prediction.label_ids, dtype=bool))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Log as the Trainer does, adding how many training sequences were truncated so far (never silent)."""
        if "loss" in logs or "train_loss" in logs:
            logs["truncated_sequences"] = self.truncation_counts()[0]
        super().log(logs, *args, **kwargs)

    def truncation_counts(self) -> tuple[int, int]:
        """``(truncated, total)`` training sequences so far, summed over processes in distributed training."""
        counts = self._truncated.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = counts.to(self.args.device)
            torch.distributed.all_reduce(counts)
        return int(counts[0]), int(counts[1])
