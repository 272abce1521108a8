r"""``RankingRewardTrainer``: a ``transformers.Trainer`` that scores each answer once and trains on all its pairs.

TRL's ``RewardTrainer`` and the paper's code feed the model each ranked pair's two sequences, so a prompt with
``K = 8`` ranked answers costs :math:`2 \binom{8}{2} = 56` forward passes. Here the collator tokenises each
(prompt, answer) once, :func:`~rewardcollapse.training.scoring.score_batch` runs one forward pass per answer, and
:func:`~rewardcollapse.loss.ranking_loss` forms every pair from the ``(B, K)`` scores: 8 passes per prompt.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from scipy import special
from transformers import ProgressCallback, Trainer, set_seed

from rewardcollapse._files import write_text_atomic
from rewardcollapse.core.conventions import prompt_utility
from rewardcollapse.core.errors import InputTypeError, InputValueError
from rewardcollapse.data.loaders import load_rankings, max_responses
from rewardcollapse.diagnostics import ranking_metrics
from rewardcollapse.loss import centering_penalty, loss_items, ranking_loss
from rewardcollapse.training.callbacks import CollapseCallback
from rewardcollapse.training.collator import RankingCollator, openness_of, tokenize_rankings
from rewardcollapse.training.config import OPENNESS, RankingRewardConfig
from rewardcollapse.training.model_card import MODEL_CARD_FILE, model_card
from rewardcollapse.training.models import (
    MODEL_SETTINGS_FILE,
    anchor_adapter_base,
    apply_token_settings,
    check_single_score,
    disable_dropout,
    fit_max_length,
    freeze_bottom_layers,
    is_encoder,
    load_reward_model,
    resolve_sequence_format,
    wrap_with_peft,
)
from rewardcollapse.training.precision import score_head_in_float32
from rewardcollapse.training.scoring import SharedLayout, score_batch
from rewardcollapse.training.shared_prompt import LayoutTrial, estimated_saving, resolve_shared_prompt

__all__ = ["RankingProgressCallback", "RankingRewardTrainer"]

WORTH_TIMING = 0.1
"""``shared_prompt: auto`` times the ways only where the layout's estimated saving on the first batch is at least
this share of the multiply-adds; below it, the extra calls and masks would eat the saving: separate sequences."""

_RANKING_COLUMNS = ("prompt", "responses")
_PAIR_COLUMNS = ("chosen", "rejected")
# Pre-tokenised pair rows: TRL's columns, and the older names TRL still reads.
_TOKEN_PAIR_COLUMNS = (("chosen_ids", "rejected_ids"), ("chosen_input_ids", "rejected_input_ids"))
_log = logging.getLogger(__name__)


def _column_names(dataset: Any) -> list[str] | None:
    """The columns of a ``datasets`` dataset; an ``IterableDataset`` of unknown features shows its first row's."""
    import datasets

    columns = getattr(dataset, "column_names", None)
    if columns is None and isinstance(dataset, datasets.IterableDataset):
        columns = list(next(iter(dataset)))
    return columns


def _pair_rows_to_rankings(batch: dict[str, list]) -> dict[str, list]:
    """TRL pair rows as two-answer ranking rows (an ``IterableDataset``'s ``map``; see :func:`load_rankings`)."""
    import datasets

    table = datasets.Dataset.from_dict(batch)
    return load_rankings(table, input_format="pairwise", transitive_closure=False, group_pairs=False).to_dict()


def _token_pairs_to_rankings(
    batch: dict[str, list], *, columns: tuple[str, str], args: RankingRewardConfig, tokenizer: Any, max_length: int
) -> dict[str, list]:
    """Pre-tokenised pair rows as two-answer ranking rows with their token columns (the collator only pads them).

    Sequences longer than ``max_length`` (None: no limit) are cut on the tokenizer's ``truncation_side`` and
    counted, as the collator cuts text (``over_long="truncate"``), or their row is left out, as TRL filters them
    (``"drop"``; the rows out are fewer than the rows in).
    """
    rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
    side = getattr(tokenizer, "truncation_side", "right")
    out: dict[str, list] = {
        name: [] for name in ("prompt", "responses", "pairs", "margins", "input_ids", "attention_mask", "num_truncated")
    }
    out["loss_openness" if args.utility == OPENNESS else "loss_utility"] = []
    limit = max_length if max_length is not None else math.inf
    for row in rows:
        ids = [list(row[columns[0]]), list(row[columns[1]])]
        if args.over_long == "drop" and max(map(len, ids)) > limit:
            continue
        cut = ids if max_length is None else [seq[:max_length] if side == "right" else seq[-max_length:] for seq in ids]
        out["prompt"].append("")
        out["responses"].append([tokenizer.decode(seq) if tokenizer is not None else str(seq) for seq in ids])
        out["pairs"].append([[0, 1]])
        out["margins"].append([float(row["margin"])] if row.get("margin") is not None else None)
        out["input_ids"].append(cut)
        out["attention_mask"].append([[1] * len(seq) for seq in cut])
        out["num_truncated"].append(sum(len(a) != len(b) for a, b in zip(ids, cut, strict=True)))
        if args.utility == OPENNESS:
            out["loss_openness"].append(openness_of(row))
        else:
            out["loss_utility"].append(prompt_utility(row, args.utility, args.closed_utility, args.open_utility))
    return out


def _prepare_dataset(
    dataset: Any, name: str, *, args: RankingRewardConfig, tokenizer: Any, max_length: int, fmt: str
) -> Any:
    """Training or evaluation data as the collator reads it, from what TRL's ``RewardTrainer`` takes.

    A ``dict`` (``DatasetDict`` or named evaluation sets) is prepared set by set. TRL's pairwise rows (``chosen``
    and ``rejected``: explicit, implicit or conversational prompt, optional ``margin``) are read by
    :func:`~rewardcollapse.data.load_rankings` with the pairs as given (no transitive closure), merged per prompt
    or, with ``group_pairs=False``, each row its own two-answer ranking. A ``datasets.Dataset`` of rankings gets its
    token columns (:func:`tokenize_rankings`, once); an ``IterableDataset`` is converted row batch by row batch and
    tokenised by the collator; a plain list of ranking rows is left to the collator.
    """
    import datasets

    if dataset is None or isinstance(dataset, str):  # a str names an evaluation set prepared already
        return dataset
    if isinstance(dataset, dict):
        return {
            key: _prepare_dataset(value, key, args=args, tokenizer=tokenizer, max_length=max_length, fmt=fmt)
            for key, value in dataset.items()
        }
    columns = _column_names(dataset)
    if columns is None:
        return dataset  # a plain list of rows: the collator tokenises each batch
    group_pairs = args.group_pairs
    pairwise = all(c in columns for c in _PAIR_COLUMNS) and "responses" not in columns
    tokens = next((pair for pair in _TOKEN_PAIR_COLUMNS if all(c in columns for c in pair)), None)
    if tokens is not None and "responses" not in columns:
        options = {"columns": tokens, "args": args, "tokenizer": tokenizer, "max_length": max_length}
        if isinstance(dataset, datasets.IterableDataset):  # no `desc`, no processes: converted as it streams
            return dataset.map(_token_pairs_to_rankings, batched=True, remove_columns=columns, fn_kwargs=options)
        with args.main_process_first(desc=f"reading {name}"):
            converted = dataset.map(
                _token_pairs_to_rankings,
                batched=True,
                remove_columns=columns,
                fn_kwargs=options,
                num_proc=args.dataset_num_proc,
                desc=f"reading the token ids of {name}",
            )
        if len(converted) < len(dataset):
            _log.info(
                "%s: dropped %d of %d pair rows with a sequence longer than max_length=%d tokens (over_long='drop')",
                name,
                len(dataset) - len(converted),
                len(dataset),
                max_length,
            )
        return converted
    if isinstance(dataset, datasets.IterableDataset):
        if not pairwise:
            return dataset
        if group_pairs:
            raise InputValueError(
                f"`{name}` is an IterableDataset of pair rows, read row by row, so the pairs of a prompt cannot be "
                "merged into one ranking: set `group_pairs=False` (TRL's batches), or pass a datasets.Dataset"
            )
        return dataset.map(_pair_rows_to_rankings, batched=True, remove_columns=columns)
    if pairwise:
        with args.main_process_first(desc=f"reading {name}"):
            dataset = load_rankings(
                dataset,
                input_format="pairwise",
                num_proc=args.dataset_num_proc,
                transitive_closure=False,
                group_pairs=group_pairs,
            )
        columns = dataset.column_names
    missing = [c for c in _RANKING_COLUMNS if c not in columns]
    if missing:
        raise InputValueError(
            f"`{name}` lacks the ranking columns {missing}; give TRL's pairwise columns (`chosen`, `rejected`, "
            "optional `prompt` and `margin`) or rankings (rewardcollapse.data.load_rankings)"
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
            over_long=args.over_long,
        )


def _widest(*datasets_: Any) -> int:
    """The most answers of a row in the prepared data sets (dicts of sets included), at least 2: the collator's ``K``.

    A streamed set (``IterableDataset``) is not walked: its pair rows have two answers, and a streamed ranking wider
    than the other sets is refused by the collator, naming ``max_answers``.
    """
    import datasets

    sets = [d for dataset in datasets_ for d in (dataset.values() if isinstance(dataset, dict) else [dataset])]
    return max(2, max_responses(*[d for d in sets if not isinstance(d, str | datasets.IterableDataset)]))


def _model_name(model: Any) -> str:
    """The last part of the model's Hub name or path (TRL's default output folder is ``<it>-Reward``)."""
    name = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", "")
    return str(name).rstrip("/").split("/")[-1] or "model"


def _check_train_dataset(dataset: Any, args: RankingRewardConfig) -> None:
    """Refuse a missing or dict training set as TRL does; a streamed one is not dispatched (as TRL, see below)."""
    import datasets

    if dataset is None:
        raise InputValueError("`train_dataset` is required: pass the training data (TRL's pairwise rows or rankings)")
    if isinstance(dataset, dict):
        raise InputTypeError(
            f"`train_dataset` must be one data set, got a {type(dataset).__name__} of {sorted(dataset)}: pick its "
            "split, e.g. train_dataset=dataset['train']"
        )
    if isinstance(dataset, datasets.IterableDataset):
        # accelerate's dispatching concatenates the processes' batches, which a stream of unknown length breaks.
        args.accelerator_config.dispatch_batches = False


def _tokenizer_of(model: Any, args: RankingRewardConfig, *, needed: bool) -> Any:
    """The tokenizer at the model's name or path, as TRL loads it when ``processing_class`` is not given."""
    from transformers import AutoTokenizer

    name = getattr(getattr(model, "config", None), "_name_or_path", "")
    if not name:
        if needed:
            raise InputValueError(
                "`processing_class` (the tokenizer) is needed to build the default collator, and the model has no "
                "name or path to load it from: pass processing_class=AutoTokenizer.from_pretrained(...)"
            )
        return None
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=getattr(args, "trust_remote_code", False))
    except (OSError, ValueError) as error:
        raise InputValueError(
            f"`processing_class` was not given and no tokenizer loads from the model's path {name!r} ({error}); "
            "pass processing_class="
        ) from error


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

    The constructor takes TRL's ``RewardTrainer`` arguments, in TRL's order, and TRL's data sets as they are.

    Parameters
    ----------
    model : transformers.PreTrainedModel or str
        A sequence classifier with one output (see :func:`load_reward_model`), or its Hub name or path, loaded
        with its weights in float32 (:data:`~rewardcollapse.training.models.TRAINING_DTYPE`) whatever it was
        stored in, as TRL does; a model object is trained in the dtype it has.
    args : RankingRewardConfig, optional
        Training arguments, including the utility (fixed or ``"prompt-aware"``), ``eps``, ``normalize`` and
        ``max_length``. Default: :attr:`config_class` with ``output_dir`` ``"<model name>-Reward"``, as TRL.
    data_collator : RankingCollator, optional
        Default: a :class:`RankingCollator` from ``args``, as wide as the datasets' largest ranking.
    train_dataset : datasets.Dataset or datasets.IterableDataset
        TRL's pairwise rows as they are (``chosen``/``rejected`` with an explicit, implicit or conversational
        prompt, optional ``margin``) or ranking rows (:func:`rewardcollapse.data.load_rankings`). Pair rows are
        read with the pairs as given, merged per prompt (``args.group_pairs``, this project's way) or each its own
        two-answer ranking (``group_pairs=False``, TRL's batches); see :func:`load_rankings`. Required.
    eval_dataset : datasets.Dataset, IterableDataset, DatasetDict or dict of them, optional
        As ``train_dataset``; a dict is evaluated set by set, its names in the metrics (``eval_<name>_loss``).
    processing_class : transformers.PreTrainedTokenizerBase, optional
        The tokenizer; saved with the model. Default: loaded from the model's name or path, as TRL does.
    compute_metrics : callable, optional
        Default: this project's ranking metrics (:func:`~rewardcollapse.diagnostics.ranking_metrics` on the
        normalised rewards) named ``ranking_pairwise_accuracy``, ``ranking_kendall_tau``, ``ranking_reward_mean``,
        ``ranking_reward_std`` and ``ranking_reward_spread``, prefixed ``eval_`` by the Trainer, beside TRL's
        (see :meth:`log`).
    callbacks, optimizers, optimizer_cls_and_kwargs, preprocess_logits_for_metrics
        As in ``transformers.Trainer`` (and TRL).
    peft_config : peft.PeftConfig, optional
        Adapters to wrap the model in (:func:`wrap_with_peft`).
    **kwargs
        Passed to ``transformers.Trainer``.
    """

    config_class: type[RankingRewardConfig] = RankingRewardConfig
    """The configuration built when ``args`` is None (``rewardcollapse.trl.RewardTrainer`` uses TRL's defaults)."""

    def __init__(
        self,
        model: Any = None,
        args: RankingRewardConfig | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        compute_metrics: Any = None,
        callbacks: list | None = None,
        optimizers: tuple = (None, None),
        optimizer_cls_and_kwargs: tuple | None = None,
        preprocess_logits_for_metrics: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if args is None:
            args = self.config_class(output_dir=f"{_model_name(model)}-Reward")
        if not isinstance(args, RankingRewardConfig):
            raise InputTypeError(f"`args` must be a RankingRewardConfig, got {type(args).__name__}")
        _check_train_dataset(train_dataset, args)
        # Seeded before anything random is made here (a new score head, peft's adapter weights), as TRL does, so
        # that two runs with one seed are the same run.
        set_seed(args.seed)
        if isinstance(model, str):  # a Hub name or a path, as TRL takes it
            model, tokenizer = load_reward_model(model, model_init_kwargs=args.from_pretrained_kwargs())
            processing_class = tokenizer if processing_class is None else processing_class
        elif args.model_init_kwargs is not None or args.trust_remote_code:  # as TRL, said rather than ignored
            _log.warning("`model_init_kwargs` and `trust_remote_code` are for a model given by name; ignored")
        check_single_score(model)
        if processing_class is None:
            processing_class = _tokenizer_of(model, args, needed=data_collator is None)
        if processing_class is not None:
            apply_token_settings(
                processing_class,
                model,
                eos_token=args.eos_token,
                pad_token=args.pad_token,
                chat_template_path=args.chat_template_path,
            )
        self.sequence_format = resolve_sequence_format(args.sequence_format, model)
        if peft_config is not None:
            model = wrap_with_peft(model, peft_config, gradient_checkpointing=args.gradient_checkpointing)
        if args.disable_dropout:  # after wrapping, so that the adapters' own dropout (`lora_dropout`) is off too
            disable_dropout(model)
        use_shared, self.layout = resolve_shared_prompt(args.shared_prompt, model)
        rows = args.world_size > 1 or args.gradient_checkpointing  # one forward per backward, or no cache
        if use_shared:
            how = "one row per prompt with a block mask" if rows else "the prompts cached, their answers on them"
            self.layout = f"{self.layout}: {how}"
        cheaper = args.shared_prompt == "auto"
        self.shared = (
            SharedLayout(row_tokens=args.shared_prompt_row_tokens, when_cheaper=cheaper) if use_shared else None
        )
        # `auto`: the first training batches are run every way and the fastest is kept (the estimate decides only
        # until then, and for evaluation before any training).
        self.layout_trial = None
        if cheaper and use_shared:
            self.layout_trial = trial = LayoutTrial(("off", "rows") if rows else ("off", "cache", "rows"))
            self._estimated_layout = f"{self.layout}, where its multiply-add estimate is below separate sequences'"
            self.layout = (
                f"shared prompt auto: the first {trial.warmup + trial.rounds} to {trial.warmup + trial.max_rounds} "
                f"training batches run every way ({', '.join(trial.candidates)}), the fastest kept"
            )
        if args.shared_prompt == "auto" and not use_shared and not is_encoder(model):
            _log.info("shared prompt: %s", self.layout)  # a causal model that falls back: said once
        max_length = fit_max_length(model, args.max_length)
        prepare = functools.partial(
            _prepare_dataset, args=args, tokenizer=processing_class, max_length=max_length, fmt=self.sequence_format
        )
        train_dataset = prepare(train_dataset, "train_dataset")
        eval_dataset = prepare(eval_dataset, "eval_dataset")
        self._prepare_evaluation_data = prepare
        if args.freeze_word_embeddings:
            model.get_input_embeddings().weight.requires_grad_(False)
        freeze_bottom_layers(model, args.freeze_layers)
        if args.bf16 or args.fp16:
            score_head_in_float32(model)
        if data_collator is None:
            data_collator = RankingCollator(
                processing_class,
                max_length=max_length,
                max_answers=_widest(train_dataset, eval_dataset),
                utility=args.utility,
                closed_utility=args.closed_utility,
                open_utility=args.open_utility,
                sequence_format=self.sequence_format,
                over_long=args.over_long,
                pad_to_multiple_of=args.pad_to_multiple_of,
            )
        super().__init__(
            model=model,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            data_collator=data_collator,
            compute_metrics=compute_metrics or self._ranking_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
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
        if self.layout_trial is not None and (self.is_fsdp_enabled or self.is_deepspeed_enabled):
            self.layout_trial = None  # timing a sharded model outside its wrapper would gather nothing: estimated
            self.layout = f"{self._estimated_layout} (not timed under FSDP or DeepSpeed)"
        if any(type(callback) is ProgressCallback for callback in self.callback_handler.callbacks):
            self.remove_callback(ProgressCallback)
            self.add_callback(RankingProgressCallback)
        self._bind_collapse_callbacks()
        # The model's forward takes no loss arguments: `num_items_in_batch` is counted by `get_batch_samples` (pairs
        # or prompts, not labelled tokens) and used by `compute_loss`.
        self.model_accepts_loss_kwargs = False
        self._truncated = torch.zeros(2, dtype=torch.long)  # (truncated, total) training sequences
        self._trl_metrics: dict[str, dict[str, list[float]]] = {"train": {}, "eval": {}}
        self._num_tokens = 0  # training tokens (attention mask) so far, TRL's `num_tokens`

    def add_callback(self, callback: Any) -> None:
        """Add a callback as the Trainer does; a :class:`CollapseCallback` without a trainer is bound to this one."""
        super().add_callback(callback)
        self._bind_collapse_callbacks()

    def _bind_collapse_callbacks(self) -> None:
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, CollapseCallback) and callback.trainer is None:
                callback.bind(self)

    def compute_loss_context_manager(self) -> contextlib.ExitStack:
        """The Trainer's context of the loss (autocast), with TRL's activation offloading when it is asked for."""
        stack = super().compute_loss_context_manager()
        if self.args.activation_offloading:
            if getattr(self, "_offloading", None) is None:  # made once: it hooks the model's output layer
                from trl.models import get_act_offloading_ctx_manager

                self._offloading = get_act_offloading_ctx_manager(model=self.model)
            stack.enter_context(self._offloading)
        return stack

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
        after the last logging step (which the Trainer adds to ``train_loss`` without gathering). It also counts the
        tokens forwarded (TRL's ``num_tokens``, over all processes).
        """
        tokens = inputs["attention_mask"].sum().to(self.args.device)
        self._num_tokens += int(self.accelerator.gather_for_metrics(tokens[None]).sum())
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
            shared = SharedLayout(shared.row_tokens, when_cheaper=shared.when_cheaper, method=shared.method)
        elif model.training and self.layout_trial is not None and self.layout_trial.chosen is None:
            self._time_layouts(model, inputs, num_items_in_batch)
            shared = self.shared
        loss, rewards = self._objective(model, inputs, shared, num_items_in_batch)
        self._record_trl_metrics(rewards.detach(), inputs["pairs"], inputs["answer_mask"], model.training)
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def _objective(self, model, inputs, shared: SharedLayout | None, num_items_in_batch) -> tuple[torch.Tensor, Any]:
        """:meth:`compute_loss`'s loss and ``(B, K)`` rewards, the answers run by ``shared`` (None: separately)."""
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
        return loss, rewards

    def _time_layouts(self, model, inputs, num_items_in_batch) -> None:
        """One round of ``shared_prompt: auto``'s trial on this batch; once it is finished, keep the fastest way.

        Each way computes this batch's loss and its gradients (``torch.autograd.grad``: nothing is accumulated, the
        optimiser never sees them) on the model under its data-parallel wrapper (so nothing is synchronised), with
        the random number generators restored afterwards; the training step then runs as it would have. The
        processes add their times up, so they all keep the same way.
        """
        trial, device = self.layout_trial, self.args.device
        module = self.accelerator.unwrap_model(model)
        row_tokens = self.shared.row_tokens
        if trial.batches == 0:  # the processes' mean, so that they all take the same branch
            saving = torch.tensor(estimated_saving(module, inputs, row_tokens=row_tokens), device=device)
            if self.accelerator.num_processes > 1:
                saving = self.accelerator.reduce(saving, reduction="mean")
            saving = float(saving)
            if saving < WORTH_TIMING:
                reason = f"by the estimate on the first batch: the layout saves {saving:.0%} of its multiply-adds"
                self._keep_layout("off", reason=reason)
                return
        parameters = [p for p in module.parameters() if p.requires_grad]
        ways = {
            "off": None,
            "cache": SharedLayout(row_tokens, method="cache"),
            "rows": SharedLayout(row_tokens, method="rows"),
        }

        def run(way: str) -> None:
            loss, _ = self._objective(module, inputs, ways[way], num_items_in_batch)
            torch.autograd.grad(loss, parameters, allow_unused=True)

        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            trial.time(run, device)
        if trial.batches < trial.warmup + trial.rounds:
            return
        names = list(trial.candidates)
        totals = torch.tensor([trial.seconds[name] for name in names], dtype=torch.float64, device=device)
        if self.accelerator.num_processes > 1:  # every process reaches this at the same batch
            totals = self.accelerator.reduce(totals, reduction="sum")
        totals = dict(zip(names, totals.tolist(), strict=True))
        if trial.timed_enough(totals):
            self._keep_layout(trial.decide(totals))

    def _keep_layout(self, way: str, *, reason: str | None = None) -> None:
        """Run every later batch ``way`` (``shared_prompt: auto``'s choice, timed or, with ``reason``, estimated)."""
        if reason is not None:
            self.layout_trial.settle(way, reason)
        stats, row_tokens = self.shared.stats, self.shared.row_tokens
        self.shared = None if way == "off" else SharedLayout(row_tokens, stats=stats, method=way)
        self.layout = f"shared prompt auto: {self.layout_trial.summary()}"
        _log.info("%s", self.layout)

    def _record_trl_metrics(self, rewards: torch.Tensor, pairs: torch.Tensor, mask: torch.Tensor, training: bool):
        """TRL's logged reward metrics over the batch's ranked pairs, as TRL computes them (logged averaged per step).

        TRL scores both sequences of every pair, so an answer counts once per ranked pair it is in: ``mean_reward``
        is the mean of both rewards over the pairs, ``min_reward``/``max_reward`` over the answers in a pair
        (``mask``: real answers; an answer in no pair is left out, as TRL never scores it).
        """
        rewards = rewards.float().masked_fill(~mask, 0.0)
        gaps = (rewards[:, :, None] - rewards[:, None, :])[pairs]
        appearances = (pairs.sum(2) + pairs.sum(1)).float()  # (B, K): ranked pairs each answer is in
        in_pairs = rewards[appearances > 0]
        nan = torch.tensor(float("nan"), device=rewards.device)
        values = {
            "accuracy": (gaps > 0).float().mean() if gaps.numel() else nan,
            "margin": gaps.mean() if gaps.numel() else nan,
            "min_reward": in_pairs.min() if in_pairs.numel() else nan,
            "mean_reward": (rewards * appearances).sum() / appearances.sum() if gaps.numel() else nan,
            "max_reward": in_pairs.max() if in_pairs.numel() else nan,
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

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        """Evaluate as the Trainer does; a data set given here is prepared as the constructor's (TRL's rows too)."""
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self._prepare_evaluation_data(eval_dataset, "eval_dataset")
            if isinstance(self.data_collator, RankingCollator) and self.data_collator.max_answers is not None:
                self.data_collator.max_answers = max(self.data_collator.max_answers, _widest(eval_dataset))
        return super().evaluate(eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def _ranking_metrics(self, prediction) -> dict[str, float]:
        rewards = np.asarray(prediction.predictions, dtype=float)
        if self.args.normalize == "sigmoid":
            rewards = special.expit(rewards)
        metrics = ranking_metrics(rewards, np.asarray(prediction.label_ids, dtype=bool))
        # Prefixed so that none reads as one of TRL's names (`accuracy` beside `pairwise_accuracy`, `mean_reward`
        # beside `reward_mean`), whose values follow TRL's definitions (see `log`).
        return {f"ranking_{name}": value for name, value in metrics.items()}

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Log as the Trainer does, adding TRL's reward metrics and how many training sequences were truncated.

        TRL's names carry TRL's values: ``accuracy`` (share of ranked pairs scored in order, a tie counting as
        wrong), ``margin`` (mean score gap of the ranked pairs), ``min_reward``, ``mean_reward``, ``max_reward``
        (raw scores of the pairs' sequences, an answer once per pair it is in), averaged over the steps since the
        last log, and ``num_tokens`` (training tokens so far, summed over processes); with ``eval_`` in front
        during evaluation. With ``group_pairs=False`` the sequences are TRL's, so are the values; merged rankings
        score each answer once, so ``num_tokens`` counts fewer tokens than TRL would for the same pairs.
        """
        mode = "eval" if any(key.startswith("eval_") for key in logs) else "train"
        record = self._trl_metrics[mode]
        prefix = "eval_" if mode == "eval" else ""
        if record:
            record["num_tokens"] = [self._num_tokens]
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

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save as the Trainer does, with the model card (``README.md``) in the folder (checkpoints too, as TRL).

        The card keeps the ``dataset_name`` and ``tags`` last given to :meth:`create_model_card`.
        """
        super().save_model(output_dir, _internal_call=_internal_call)
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            write_text_atomic(folder / MODEL_CARD_FILE, str(self._model_card()))

    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
    ) -> None:
        """Write the model card (``README.md``) into ``args.output_dir``, with TRL's arguments.

        ``Trainer.push_to_hub(**kwargs)`` passes its extra keywords here, so ``push_to_hub(dataset_name=...)``
        works as in TRL. The card gives the base model, the data, the utility, the loss, the tags
        ``rewardcollapse`` and ``reward-model`` and the paper's citation
        (:func:`~rewardcollapse.training.model_card.model_card`).

        Parameters
        ----------
        model_name : str, optional
            The card's title. Default: the last part of ``args.hub_model_id``, else the output folder's name.
        dataset_name : str, optional
            The training data's name (a Hub data set id lands in the card's metadata); kept for later saves.
        tags : str or list of str, optional
            More tags for the card's metadata; kept for later saves.
        """
        given = {"dataset_name": dataset_name, "tags": tags}
        self._card_settings = {**self._card_settings, **{key: value for key, value in given.items() if value}}
        if self.is_world_process_zero():
            card = self._model_card(model_name)
            write_text_atomic(Path(self.args.output_dir) / MODEL_CARD_FILE, str(card))

    _card_settings: Mapping[str, Any] = MappingProxyType({})  # what create_model_card was given

    def _model_card(self, model_name: str | None = None) -> Any:
        """The card of the model: :func:`model_card` with what the trainer knows and :meth:`create_model_card` got."""
        if model_name is None:
            hub = self.args.hub_model_id
            model_name = hub.split("/")[-1] if hub else Path(self.args.output_dir).name
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        train = self.train_dataset
        return model_card(
            args=self.args,
            model_name=model_name,
            base_model=getattr(model.config, "_name_or_path", None) or None,
            model_tags=getattr(model, "model_tags", None),
            sequence_format=self.sequence_format,
            train_prompts=len(train) if hasattr(train, "__len__") else None,
            adapters=hasattr(model, "peft_config"),
            repo_id=getattr(self, "hub_model_id", None) or self.args.hub_model_id,
            **self._card_settings,
        )

    def truncation_counts(self) -> tuple[int, int]:
        """``(truncated, total)`` training sequences so far, summed over processes in distributed training."""
        counts = self._truncated.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            counts = counts.to(self.args.device)
            torch.distributed.all_reduce(counts)
        return int(counts[0]), int(counts[1])
