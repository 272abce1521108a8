"""Watch collapse while a reward model trains: a ``TrainerCallback`` scoring held-out rankings and logging measures.

:class:`CollapseCallback` scores every answer of a held-out set of ranking rows once, in one pass under
``torch.inference_mode()``, computes :func:`rewardcollapse.diagnostics.measure_ranked` against the training utility
and logs :meth:`~rewardcollapse.diagnostics.RankedMeasures.metrics` (``collapse/index``, ``collapse/shape_index``,
``collapse/optimum_distance``, ``collapse/wasserstein_open``, ...) through the Trainer's own logging, so
TensorBoard, Weights & Biases or MLflow show them with no extra code. docs/training.md ("Watching collapse during
training") says what each measure means and what it costs.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from rewardcollapse.core.checks import check_positive_int
from rewardcollapse.core.conventions import PROMPT_AWARE, prompt_utility
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.diagnostics import measure_ranked
from rewardcollapse.settings import MAX_LENGTH
from rewardcollapse.training.collator import RankingCollator, tokenize_rankings
from rewardcollapse.training.models import fit_max_length, resolve_sequence_format
from rewardcollapse.training.scoring import SCORING_CHUNK, SharedLayout, score_rankings

__all__ = ["CollapseCallback"]


class CollapseCallback(TrainerCallback):
    """Score held-out ranking rows during training and log their collapse measures as ``collapse/<name>``.

    Parameters
    ----------
    rows : str, Path, datasets.Dataset or list of dict
        Held-out ranking rows, any source :func:`rewardcollapse.data.load_rankings` reads (a list of dicts too);
        loaded once, here. Rows with ``openness`` give the collapse index and the per-group distances; the
        label-free measures need none.
    utility : str, optional
        The training utility, whose exact optimum for each prompt's ranking is its collapse point
        (``collapse/optimum_distance``). Default: the trainer's ``args.utility`` (with its ``closed_utility`` and
        ``open_utility`` for a prompt-aware run); a trainer without one (a plain ``Trainer``; TRL's ``RewardTrainer``,
        whose loss is ``"logsigmoid"``) gives no distance unless this is given.
    levels : sequence of float, optional
        Group the rows by these openness levels instead of open and closed (as ``measure_ranked``).
    every : int, optional
        None: measure at each of the Trainer's evaluations (``on_evaluate``). N: at the start of training (the
        untrained model, before the first step), every N optimizer steps and at the end, whether or not the
        Trainer evaluates.
    batch_size : int, optional
        Prompts per scoring batch; default: the trainer's ``per_device_eval_batch_size``.
    forward_batch_size : int, optional
        Sequences per forward pass, taken in order of length (default
        :data:`~rewardcollapse.training.scoring.SCORING_CHUNK`); None: all of a batch's answers at once. Not the
        training's ``forward_batch_size``, which sizes passes that keep activations for a backward pass.
    max_length : int, optional
        Tokens per sequence; default: the trainer's ``args.max_length`` (else 512), lowered to the model's positions.
    sequence_format : str, default "auto"
        How a (prompt, answer) becomes the model's input: ``"auto"`` is the trainer's own format
        (:class:`~rewardcollapse.training.RankingRewardTrainer`), else the model's (text pairs for encoders, TRL's
        one text for decoders); or ``"pair"``, ``"trl"``.
    draws : int, default 100
        Shuffles for the shape spread under collapse (:func:`~rewardcollapse.diagnostics.label_free_measures`).
    at_start, at_end : bool, default True
        With ``every``: measure before the first step, and after the last. Off where those points are measured
        anyway (the experiment takes them from its untrained reference and its test scoring).
    trainer : transformers.Trainer, optional
        The trainer whose model is scored and whose ``log`` is used. A ``RankingRewardTrainer`` binds each
        CollapseCallback in its ``callbacks`` to itself; with any other ``Trainer`` (TRL's ``RewardTrainer``
        included) pass it here and add the callback with ``trainer.add_callback``.

    Attributes
    ----------
    history : list of dict
        One entry per measured point: ``step``, every logged metric, and ``seconds`` (that point's scoring and
        measuring time). Filled on the main process.
    seconds : float
        Total time spent scoring and measuring, on the main process.

    Notes
    -----
    Scoring runs with the model in eval mode (dropout off) under ``torch.inference_mode()`` and the trainer's
    autocast, and the model's train mode is restored after it. Answers are tokenised once; prompts are scored
    in batches sorted by length, and :func:`~rewardcollapse.training.score_batch` sorts each batch's sequences
    by length again, so little padding is computed.

    In distributed training only the main process scores (the unwrapped model holds every weight under DDP) and
    logs, while the other processes wait at a barrier; FSDP and DeepSpeed ZeRO-3, whose weights are sharded over
    the processes, are refused.
    ``Trainer.log`` is called as the base class defines it: subclasses such as TRL's ``RewardTrainer`` add their
    running training metrics to whatever is logged and reset them, which would take them from the next training log.
    """

    def __init__(
        self,
        rows: Any,
        *,
        utility: str | None = None,
        levels: Any = None,
        every: int | None = None,
        batch_size: int | None = None,
        forward_batch_size: int | None = SCORING_CHUNK,
        max_length: int | None = None,
        sequence_format: str = "auto",
        draws: int = 100,
        at_start: bool = True,
        at_end: bool = True,
        trainer: Trainer | None = None,
    ) -> None:
        import datasets

        from rewardcollapse.data import load_rankings

        check_positive_int(every, "every", optional=True)
        check_positive_int(batch_size, "batch_size", optional=True)
        check_positive_int(forward_batch_size, "forward_batch_size", optional=True)
        check_positive_int(max_length, "max_length", optional=True)
        check_positive_int(draws, "draws")
        if isinstance(rows, list):
            rows = datasets.Dataset.from_list(rows)
        self.dataset = load_rankings(rows)
        if len(self.dataset) == 0:
            raise InputValueError("`rows` of the CollapseCallback holds no ranking row; give held-out rankings")
        self.utility = utility
        self.levels = levels
        self.every = every
        self.at_start, self.at_end = at_start, at_end
        self.batch_size = batch_size
        self.forward_batch_size = forward_batch_size
        self.max_length = max_length
        self.sequence_format = sequence_format
        self.draws = draws
        self.history: list[dict[str, float]] = []
        self.seconds = 0.0
        self.trainer: Trainer | None = None
        self._prepared: tuple[Any, Any, np.ndarray, list[dict[str, Any]], str | None] | None = None
        if trainer is not None:
            self.bind(trainer)

    def bind(self, trainer: Trainer) -> None:
        """Score ``trainer``'s model and log through it (a ``RankingRewardTrainer`` calls this itself).

        Raises
        ------
        InputValueError
            For a trainer whose weights are sharded over its processes (FSDP, DeepSpeed ZeRO-3).
        """
        deepspeed = getattr(getattr(trainer.accelerator, "state", None), "deepspeed_plugin", None)
        if getattr(trainer, "is_fsdp_enabled", False) or getattr(deepspeed, "zero_stage", None) == 3:
            raise InputValueError(
                "CollapseCallback scores on the main process alone, which needs every weight there; FSDP and "
                "DeepSpeed ZeRO-3 shard them over the processes: watch collapse with DDP, or score saved checkpoints"
            )
        self.trainer = trainer
        self._prepared = None

    def on_train_begin(self, args, state, control, **kwargs):
        """With ``every`` (and ``at_start``): measure the model before its first step."""
        if self.every is not None and self.at_start:
            self._measure(state)

    def on_step_end(self, args, state, control, **kwargs):
        """With ``every``: measure every ``every`` optimizer steps (the last one only with ``at_end``)."""
        last = state.global_step >= state.max_steps
        if self.every is not None and state.global_step % self.every == 0 and (self.at_end or not last):
            self._measure(state)

    def on_train_end(self, args, state, control, **kwargs):
        """With ``every`` (and ``at_end``): measure the trained model (unless its last step was just measured)."""
        if self.every is not None and self.at_end:
            self._measure(state)

    def on_evaluate(self, args, state, control, **kwargs):
        """Without ``every``: measure at each of the Trainer's evaluations."""
        if self.every is None:
            self._measure(state)

    def _measure(self, state: Any) -> None:
        """Score, measure and log at ``state.global_step`` once (the main process; the others wait)."""
        trainer = self.trainer
        if trainer is None:
            raise InputValueError(
                "this CollapseCallback has no trainer to score with: pass trainer= (a plain Trainer or TRL's "
                "RewardTrainer), or give it in a RankingRewardTrainer's `callbacks`"
            )
        step = state.global_step
        if trainer.accelerator.is_main_process and not (self.history and self.history[-1]["step"] == step):
            started = time.perf_counter()
            measures = self._measures()
            seconds = time.perf_counter() - started
            self.seconds += seconds
            metrics = measures.metrics()
            self.history.append({"step": step, **metrics, "seconds": seconds})
            # The base class's log: a subclass's log adds its running training metrics and resets them. Its
            # `on_log` clears `should_log`, which the Trainer's own log of this step (after `on_step_end`) needs.
            should_log = trainer.control.should_log
            Trainer.log(trainer, metrics)
            trainer.control.should_log = should_log
        trainer.accelerator.wait_for_everyone()

    def _prepare(self) -> tuple[Any, Any, np.ndarray, list[dict[str, Any]], str | None]:
        """Tokenise the rows once: the collator, the tokenised rows sorted by length, their order, rows, utility."""
        trainer = self.trainer
        model = trainer.model
        args = trainer.args
        fmt = self.sequence_format
        if fmt == "auto":
            fmt = getattr(trainer, "sequence_format", None) or resolve_sequence_format("auto", model)
        limit = self.max_length or getattr(args, "max_length", MAX_LENGTH)
        max_length = fit_max_length(model, limit)
        tokenizer = trainer.processing_class
        tokenized = tokenize_rankings(
            self.dataset, tokenizer, max_length=max_length, name="collapse rows", sequence_format=fmt
        )
        order = np.argsort([-sum(map(len, ids)) for ids in tokenized["input_ids"]], kind="stable")
        collator = RankingCollator(tokenizer, max_length=max_length, sequence_format=fmt)
        rows = self.dataset.to_list()
        utility = self.utility or getattr(args, "utility", None)
        if utility == PROMPT_AWARE and self.utility is None:  # the trainer's own closed and open utilities
            closed, opened = getattr(args, "closed_utility", None), getattr(args, "open_utility", None)
            if closed is not None and opened is not None:
                rows = [
                    {**row, "utility": prompt_utility(row, utility, closed, opened)}
                    if row.get("utility") is None and row.get("openness") is not None
                    else row
                    for row in rows
                ]
        return collator, tokenized.select(order), order, rows, utility

    def _measures(self) -> Any:
        """Score every row's answers once with the model in eval mode, then :func:`measure_ranked`."""
        if self._prepared is None:
            self._prepared = self._prepare()
        collator, tokenized, order, rows, utility = self._prepared
        trainer = self.trainer
        model = trainer.model
        shared = getattr(trainer, "shared", None)
        if shared is not None:  # its own token counts: not the training's
            shared = SharedLayout(shared.row_tokens, when_cheaper=shared.when_cheaper, method=shared.method)
        batch_size = self.batch_size or trainer.args.per_device_eval_batch_size
        training = model.training
        try:
            with torch.inference_mode(), trainer.accelerator.autocast():
                scored = list(
                    score_rankings(
                        model,
                        collator,
                        tokenized,
                        batch_size=batch_size,
                        forward_batch_size=self.forward_batch_size,
                        device=trainer.args.device,
                        progress=False,
                        shared=shared,
                    )
                )
        finally:
            model.train(training)
        rewards: list[list[float]] = [[] for _ in rows]
        for position, values in zip(order, scored, strict=True):
            rewards[position] = values
        return measure_ranked(rows, rewards, utility=utility, levels=self.levels, draws=self.draws)
