r"""``RankingRewardTrainer``: a ``transformers.Trainer`` that scores each answer once and trains on all its pairs.

TRL's ``RewardTrainer`` and the paper's code feed the model each ranked pair's two sequences, so a prompt with
``K = 8`` ranked answers costs :math:`2 \binom{8}{2} = 56` forward passes. Here the collator tokenises each
(prompt, answer) once, :func:`~rewardcollapse.training.scoring.score_batch` runs one forward pass per answer, and
:func:`~rewardcollapse.loss.ranking_loss` forms every pair from the ``(B, K)`` scores: 8 passes per prompt.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import special
from transformers import ProgressCallback, Trainer, set_seed

from rewardcollapse._files import write_text_atomic
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.data.loaders import max_responses
from rewardcollapse.diagnostics import ranking_metrics
from rewardcollapse.loss import centering_penalty, loss_items, ranking_loss
from rewardcollapse.training.collator import RankingCollator, tokenize_rankings
from rewardcollapse.training.config import OPENNESS, RankingRewardConfig
from rewardcollapse.training.models import (
    MODEL_SETTINGS_FILE,
    TRAINING_DTYPE,
    anchor_adapter_base,
    check_single_score,
    disable_dropout,
    fit_max_length,
    is_encoder,
    load_reward_model,
    resolve_sequence_format,
    set_padding_token,
    wrap_with_peft,
)
from rewardcollapse.training.precision import score_head_in_float32
from rewardcollapse.training.scoring import SharedLayout, score_batch
from rewardcollapse.training.shared_prompt import resolve_shared_prompt

__all__ = ["RankingProgressCallback", "RankingRewardTrainer"]

_RANKING_COLUMNS = ("prompt", "responses")
_log = logging.getLogger(__name__)


def _prepare_dataset(
    dataset: Any, name: str, *, args: RankingRewardConfig, tokenizer: Any, max_length: int, fmt: str
) -> Any:
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
            sequence_format=fmt,
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
    model : transformers.PreTrainedModel or str
        A sequence classifier with one output (see :func:`load_reward_model`), or its Hub name or path, loaded
        with its weights in float32 (:data:`~rewardcollapse.training.models.TRAINING_DTYPE`) whatever it was
        stored in, as TRL does; a model object is trained in the dtype it has.
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
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, RankingRewardConfig):
            raise InputTypeError(f"`args` must be a RankingRewardConfig, got {type(args).__name__}")
        # Seeded before anything random is made here (a new score head, peft's adapter weights), as TRL does, so
        # that two runs with one seed are the same run.
        set_seed(args.seed)
        if isinstance(model, str):  # a Hub name or a path, as TRL takes it
            model, tokenizer = load_reward_model(model, dtype=TRAINING_DTYPE)
            processing_class = tokenizer if processing_class is None else processing_class
        check_single_score(model)
        if processing_class is None and data_collator is None:
            raise InputValueError("`processing_class` (the tokenizer) is needed to build the default collator")
        if processing_class is not None:
            set_padding_token(processing_class, model)
        self.sequence_format = resolve_sequence_format(args.sequence_format, model)
        if peft_config is not None:
            model = wrap_with_peft(model, peft_config, gradient_checkpointing=args.gradient_checkpointing)
        if args.disable_dropout:  # after wrapping, so that the adapters' own dropout (`lora_dropout`) is off too
            disable_dropout(model)
        use_shared, self.layout = resolve_shared_prompt(args.shared_prompt, model)
        if use_shared:
            rows = args.world_size > 1 or args.gradient_checkpointing  # one forward per backward, or no cache
            how = "one row per prompt with a block mask" if rows else "the prompt cached, its answers batched on it"
            self.layout = f"{self.layout}: {how}"
        cheaper = args.shared_prompt == "auto"
        self.shared = (
            SharedLayout(row_tokens=args.shared_prompt_row_tokens, when_cheaper=cheaper) if use_shared else None
        )
        if args.shared_prompt == "auto" and not use_shared and not is_encoder(model):
            _log.info("shared prompt: %s", self.layout)  # a causal model that falls back: said once
        max_length = fit_max_length(model, args.max_length)
        prepare = functools.partial(
            _prepare_dataset, args=args, tokenizer=processing_class, max_length=max_length, fmt=self.sequence_format
        )
        train_dataset = prepare(train_dataset, "train_dataset")
        eval_dataset = prepare(eval_dataset, "eval_dataset")
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
                sequence_format=self.sequence_format,
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
        fsdp_asked = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true") or bool(self.args.fsdp)
        if fsdp_asked and not self.is_fsdp_enabled:
            raise InputValueError(
                f"FSDP was asked for, but accelerate set up {self.accelerator.distributed_type.value} on "
                f"{self.args.device}: accelerate attaches FSDP only on GPUs, so it would train by plain data "
                "parallelism here; use configs/accelerate/ddp.yaml on a CPU"
            )
        if self.args.world_size > 1 and self.accelerator.distributed_type.value == "NO":
            raise InputValueError(
                f"{self.args.world_size} processes were launched but accelerate set up no data parallelism, so "
                "gradients would not be averaged; on CPU pass use_cpu=True (CUDA: check the launcher)"
            )
        if any(type(callback) is ProgressCallback for callback in self.callback_handler.callbacks):
            self.remove_callback(ProgressCallback)
            self.add_callback(RankingProgressCallback)
        # The model's forward takes no loss arguments: `num_items_in_batch` is counted by `get_batch_samples` (pairs
        # or prompts, not labelled tokens) and used by `compute_loss`.
        self.model_accepts_loss_kwargs = False
        self._truncated = torch.zeros(2, dtype=torch.long)  # (truncated, total) training sequences
        self._trl_metrics: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The next optimizer step's micro-batches, and how many terms the step's loss averages over all processes.

        The count (:func:`~rewardcollapse.loss.loss_items`: ranked pairs for ``pair_weighting="pair"``, prompts for
        ``"prompt"``) is summed over the step's micro-batches and every process, so :meth:`compute_loss` divides
        each micro-batch's summed loss by the global batch's count: the step is the mean over the global batch
        whatever the number of processes, the accumulation steps and the pairs each holds.
        """
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        weighting = self.args.pair_weighting
        count = torch.zeros((), dtype=torch.long, device=device)  # on the device: no wait for the host
        for batch in batches:
            count += loss_items(batch["pairs"], mask=batch["answer_mask"], pair_weighting=weighting).to(device)
        # Every process reaches this once per optimizer step (also with no batch left), so the sum cannot hang.
        return batches, self.accelerator.reduce(count, reduction="sum")

    def training_step(self, model, inputs, num_items_in_batch=None):
        """One micro-batch's forward and backward; returns its share of the step's loss over all processes.

        With ``num_items_in_batch`` (:meth:`get_batch_samples`) the loss is already a share of the global batch's
        mean, so the Trainer does not divide it by the accumulation steps again. The returned value is averaged over
        the processes, so the logged ``loss`` and the final ``train_loss`` are the global batch's, also for steps
        after the last logging step (which the Trainer adds to ``train_loss`` without gathering).
        """
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        loss = super().training_step(model, inputs, num_items_in_batch)
        return self.accelerator.reduce(loss, reduction="mean")

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Score every answer once, then the ranking loss over all the batch's ranked pairs.

        Without ``num_items_in_batch`` the loss is this batch's mean (:func:`~rewardcollapse.loss.ranking_loss`).
        With it (the global batch's :func:`~rewardcollapse.loss.loss_items`), it is this batch's summed loss
        divided by that count and multiplied by the number of processes, whose gradients data parallelism averages:
        the gradients summed over the accumulation steps and averaged over the processes are those of the global
        batch's mean, the same as one process with the whole batch.
        """
        truncated = inputs.pop("num_truncated", None)
        if model.training and truncated is not None:
            self._truncated += torch.tensor([int(truncated), len(inputs["answer_slot"])])
        shared = self.shared
        if shared is not None and not model.training:  # evaluation's tokens are not the training's
            shared = SharedLayout(shared.row_tokens, when_cheaper=shared.when_cheaper)
        rewards = score_batch(model, inputs, forward_batch_size=self.args.forward_batch_size, shared=shared)
        reduction = "mean" if num_items_in_batch is None else "sum"
        loss = ranking_loss(
            rewards,
            utilities=inputs["utilities"],
            family="openness" if self.args.utility == OPENNESS else None,
            pairs=inputs["pairs"],
            mask=inputs["answer_mask"],
            normalize=self.args.normalize,
            eps=self.args.eps,
            margins=inputs.get("margins"),
            pair_weighting=self.args.pair_weighting,
            reduction=reduction,
        )
        if self.args.center_rewards_coefficient is not None:
            centering = centering_penalty(
                rewards, inputs["pairs"], pair_weighting=self.args.pair_weighting, reduction=reduction
            )
            loss = loss + self.args.center_rewards_coefficient * centering
        if num_items_in_batch is not None:
            count = torch.as_tensor(num_items_in_batch, device=loss.device).clamp_min(1).to(loss.dtype)
            loss = loss / count * self.accelerator.num_processes
        self._record_trl_metrics(rewards.detach(), inputs["pairs"], inputs["answer_mask"], model.training)
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def _record_trl_metrics(self, rewards: torch.Tensor, pairs: torch.Tensor, mask: torch.Tensor, training: bool):
        """TRL's logged reward metrics, over the batch's ranked pairs and real answers (logged averaged per step)."""
        rewards = rewards.float()
        gaps = (rewards[:, :, None] - rewards[:, None, :])[pairs]
        real = rewards[mask]
        values = {
            "accuracy": (gaps > 0).float().mean() if gaps.numel() else torch.tensor(float("nan")),
            "margin": gaps.mean() if gaps.numel() else torch.tensor(float("nan")),
            "min_reward": real.min(),
            "mean_reward": real.mean(),
            "max_reward": real.max(),
        }
        gathered = self.accelerator.gather_for_metrics(torch.stack(list(values.values()))[None].to(rewards.device))
        record = self._trl_metrics["train" if training else "eval"]
        for name, value in zip(values, gathered.reshape(-1, len(values)).nanmean(0).tolist(), strict=True):
            record.setdefault(name, []).append(value)

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
        if self.args.normalize == "sigmoid":
            rewards = special.expit(rewards)
        return ranking_metrics(rewards, np.asarray(prediction.label_ids, dtype=bool))

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Log as the Trainer does, adding TRL's reward metrics and how many training sequences were truncated.

        TRL's names: ``accuracy`` (share of ranked pairs scored in order), ``margin`` (mean score gap of the ranked
        pairs), ``min_reward``, ``mean_reward``, ``max_reward`` (raw scores), averaged since the last log, with
        ``eval_`` in front during evaluation.
        """
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        record = self._trl_metrics[mode]
        prefix = "eval_" if mode == "eval" else ""
        logs.update({f"{prefix}{name}": float(np.mean(values)) for name, values in record.items() if values})
        record.clear()
        if "loss" in logs or "train_loss" in logs:
            logs["truncated_sequences"] = self.truncation_counts()[0]
        super().log(logs, *args, **kwargs)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        """Save as the Trainer does, plus how the model reads its input (:data:`MODEL_SETTINGS_FILE`).

        Adapters (the final model and every checkpoint) name a local base model by its absolute path
        (:func:`anchor_adapter_base`), also when the model came wrapped in adapters already.
        """
        anchor_adapter_base(self.accelerator.unwrap_model(self.model, keep_torch_compile=False))
        super()._save(output_dir, state_dict=state_dict)
        folder = Path(output_dir if output_dir is not None else self.args.output_dir)
        settings = {"sequence_format": self.sequence_format, "max_length": self.args.max_length}
        write_text_atomic(folder / MODEL_SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")

    def truncation_counts(self) -> tuple[int, int]:
        """``(truncated, total)`` training sequences so far, summed over processes in distributed training."""
        counts = self._truncated.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = counts.to(self.args.device)
            torch.distributed.all_reduce(counts)
        return int(counts[0]), int(counts[1])
