"""End-to-end jobs behind ``rewardcollapse train`` and ``rewardcollapse score``: files in, model or rewards out."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import special
from transformers import set_seed

from rewardcollapse._files import (
    atomic_write,
    locked_output_file,
    locked_output_folder,
    staging_directory,
    write_text_atomic,
)
from rewardcollapse.core.checks import check_positive_int
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.data import detect_format, load_rankings, max_responses, pair_positions, ranked_pairs, read_table
from rewardcollapse.diagnostics import ranking_metrics
from rewardcollapse.settings import MAX_LENGTH, ModelInput, ScoreJob, check_collapse_watch
from rewardcollapse.training.callbacks import CollapseCallback
from rewardcollapse.training.checkpoints import checkpoint_folders, resume_checkpoint
from rewardcollapse.training.collator import RankingCollator, tokenize_rankings
from rewardcollapse.training.config import RankingRewardConfig
from rewardcollapse.training.models import (
    default_backbone,
    fit_max_length,
    load_reward_model,
    quiet_transformers,
    resolve_sequence_format,
)
from rewardcollapse.training.precision import choose_precision
from rewardcollapse.training.scoring import SharedLayout, score_rankings, truncation_by_prompt
from rewardcollapse.training.shared_prompt import resolve_shared_prompt
from rewardcollapse.training.trainer import RankingRewardTrainer

__all__ = ["SUMMARY_FILE", "LoraSummary", "ScoreResult", "TrainResult", "score_file", "train_reward_model"]

SUMMARY_FILE = "training_summary.json"
"""Written last into a trained model's folder: there only when the model is complete."""


@dataclass(frozen=True)
class LoraSummary:
    """The LoRA adapters a model was trained with: their rank, and whether they were merged into the weights."""

    r: int
    merged: bool


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train_reward_model` did; :meth:`to_dict` is ``training_summary.json`` (with ``model``)."""

    model: str
    """The folder of the trained model."""
    backbone: str
    utility: str
    precision: str
    precision_reason: str
    sequence_format: str
    layout: str
    """How the answers ran through the model (separate sequences, or the shared-prompt layout and why)."""
    tokens_saved: float | None
    """Fraction of tokens the shared-prompt layout saved; None without it."""
    layout_trial: dict[str, Any] | None
    """``shared_prompt: auto``'s measurement (:class:`~rewardcollapse.training.shared_prompt.LayoutTrial`): the way
    kept (``off``, ``cache`` or ``rows``; None if the run ended first) and why, each way's seconds per timed batch;
    None without ``auto``'s trial (another setting, an encoder, FSDP or DeepSpeed)."""
    lora: LoraSummary | None
    train_prompts: int
    steps: int
    train_loss: float
    seconds: float
    prompts_per_second: float
    truncated_sequences: int
    sequences: int
    eval: dict[str, float] | None = None
    """The Trainer's evaluation metrics (``eval_loss``, ``eval_ranking_pairwise_accuracy``, ...) with ``eval_data``."""
    collapse: list[dict[str, float]] | None = None
    """With ``collapse_every``: the :class:`~rewardcollapse.training.CollapseCallback` history, one entry per point
    (``step``, each ``collapse/...`` measure, ``seconds``)."""
    collapse_seconds: float | None = None
    """With ``collapse_every``: the time spent scoring and measuring collapse (part of ``seconds``)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values, ``eval`` and the collapse fields only when there were some (the file's layout)."""
        fields = dataclasses.asdict(self)
        for name in ("eval", "collapse", "collapse_seconds"):
            if fields[name] is None:
                del fields[name]
        return fields


@dataclass(frozen=True)
class ScoreResult:
    """What :func:`score_file` wrote and how the rewards rank the answers (on the normalised rewards)."""

    output: str
    sequence_format: str
    layout: str
    tokens_saved: float | None
    """Fraction of tokens the shared-prompt layout saved; None without it."""
    prompts: int
    answers: int
    max_length: int
    """Tokens per sequence the answers were read with (lowered to the model's positions where it has fewer)."""
    truncated_answers: int
    """Answers whose sequence was cut at ``max_length``."""
    indistinguishable_prompts: int
    """Prompts whose answers were all cut to the same tokens (equal rewards by construction): flagged in the output
    and left out of the ranking metrics below."""
    pairwise_accuracy: float
    kendall_tau: float
    reward_mean: float
    reward_std: float
    reward_spread: float
    pair_rows: int | None = None
    """Input rows written with a reward for their chosen and rejected answers (a pairwise file); None for a file
    of rankings (one output row per prompt)."""


def train_reward_model(
    *,
    model: str | None,
    data: Any,
    output_dir: str | Path | None = None,
    eval_data: Any = None,
    input_format: str = "auto",
    skip_invalid: bool = False,
    resume: str | bool | None = None,
    args: RankingRewardConfig | None = None,
    peft_config: Any = None,
    merge_lora: bool = False,
    collapse_data: Any = None,
    collapse_every: int | None = None,
    callbacks: list[Any] | None = None,
    **config: Any,
) -> TrainResult:
    """Load the data and the model, train with :class:`RankingRewardTrainer`, save, and return what was done.

    Parameters
    ----------
    model : str or None
        Hub name or local path of the backbone; None for :func:`default_backbone`. Its weights are loaded in
        float32 (:data:`~rewardcollapse.training.models.TRAINING_DTYPE`) whatever they were stored in; mixed
        precision is the ``precision`` setting's autocast.
    data, eval_data : str, Path or datasets.Dataset
        Training and optional evaluation data, any source :func:`rewardcollapse.data.load_rankings` reads.
    output_dir : str or Path, optional
        Where checkpoints and the final model (loadable with ``AutoModelForSequenceClassification``) go; default:
        ``args.output_dir``.
    input_format, skip_invalid
        Passed to :func:`~rewardcollapse.data.load_rankings`.
    resume : str or bool, optional
        A checkpoint directory to resume from, or True for the latest checkpoint in ``output_dir``.
    args : RankingRewardConfig, optional
        The training arguments, made already (the ``train`` command parses them); else built from ``**config``.
    peft_config : peft.PeftConfig, optional
        Train adapters (e.g. ``peft.LoraConfig``) instead of every weight; the score head trains in full.
    merge_lora : bool
        With ``peft_config``: merge the adapters into the weights and save a plain model.
    collapse_data : str, Path or datasets.Dataset, optional
        Held-out rankings to measure collapse on while training; default: ``eval_data``. Needs ``collapse_every``.
    collapse_every : int, optional
        Measure collapse on them (:class:`~rewardcollapse.training.CollapseCallback`, against ``utility``) before
        the first step, every this many steps and at the end, logged as ``collapse/...``.
    callbacks : list of transformers.TrainerCallback, optional
        More callbacks for the Trainer; a :class:`~rewardcollapse.training.CollapseCallback` among them (for
        openness levels, or other points) is bound to it, and its history and seconds are recorded as
        ``collapse_every``'s are (give one or the other).
    **config
        :class:`RankingRewardConfig` fields (``utility``, ``max_steps``, ``learning_rate``, ...).

    Returns
    -------
    TrainResult
        Steps, final training loss, wall time, prompts per second, truncated sequences, evaluation metrics, the
        collapse history and the model folder; also written to ``training_summary.json`` there, last.
    """
    check_collapse_watch(collapse_every, collapse_data, eval_data)
    callbacks = list(callbacks or [])
    watches = [c for c in callbacks if isinstance(c, CollapseCallback)]
    if len(watches) + (collapse_every is not None) > 1:
        raise InputValueError("give one collapse watch: `collapse_every`, or one CollapseCallback in `callbacks`")
    args = _training_arguments(args, output_dir, config)
    args.check_evaluation_data(eval_data is not None)  # before any folder is made or anything loaded
    if merge_lora and peft_config is None:
        raise InputValueError("`merge_lora` needs `peft_config` (LoRA training)")
    # The process that saves holds the folder (under DDP the main one: the others write nothing there).
    held = locked_output_folder(args.output_dir, "output_dir") if args.should_save else contextlib.nullcontext()
    with held:
        return _train(
            args,
            model=model,
            data=data,
            eval_data=eval_data,
            input_format=input_format,
            skip_invalid=skip_invalid,
            resume=resume,
            peft_config=peft_config,
            merge_lora=merge_lora,
            collapse=None if collapse_every is None else (collapse_data, collapse_every),
            callbacks=callbacks,
        )


def _train(
    args: RankingRewardConfig,
    *,
    model: str | None,
    data: Any,
    eval_data: Any,
    input_format: str,
    skip_invalid: bool,
    resume: str | bool | None,
    peft_config: Any,
    merge_lora: bool,
    collapse: tuple[Any, int] | None,
    callbacks: list[Any],
) -> TrainResult:
    """The work of :func:`train_reward_model` once the output folder is checked and held.

    ``collapse``: ``(collapse_data, collapse_every)``, the data None for the evaluation data.
    """
    checkpoint, start_step = _starting_point(args, model, resume)
    group_pairs = args.group_pairs
    train = _load_data(data, "data", input_format, skip_invalid, group_pairs)
    evaluation = None if eval_data is None else _load_data(eval_data, "eval_data", "auto", skip_invalid, group_pairs)
    watch = next((c for c in callbacks if isinstance(c, CollapseCallback)), None)
    if collapse is not None:
        source, every = collapse
        held_out = evaluation if source is None else _load_data(source, "collapse_data", "auto", skip_invalid)
        watch = CollapseCallback(held_out, every=every)
        callbacks = [*callbacks, watch]
    set_seed(args.seed)  # the new score head's initial weights too
    network, tokenizer = load_reward_model(model or default_backbone(), model_init_kwargs=args.from_pretrained_kwargs())
    trainer = RankingRewardTrainer(
        model=network,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks or None,
    )
    started = time.perf_counter()
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - started
    if merge_lora:
        trainer.model = trainer.model_wrapped = trainer.model.merge_and_unload()
    _save_final_model(trainer, Path(args.output_dir))
    if isinstance(data, str) and not Path(data).exists():  # a Hub data set: named in the model card
        trainer.create_model_card(dataset_name=data)
    # Prompts this run trained on: its own steps (not those before a resume), each at most the whole dataset.
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    prompts = (outcome.global_step - start_step) * min(per_step, len(train))
    truncated, sequences = trainer.truncation_counts()
    result = TrainResult(
        model=str(args.output_dir),
        backbone=model or default_backbone(),
        utility=args.utility,
        precision=args.precision,
        precision_reason=args.precision_reason,
        sequence_format=trainer.sequence_format,
        layout=trainer.layout,
        tokens_saved=None if trainer.shared is None else round(trainer.shared.stats.saved, 4),
        layout_trial=None if trainer.layout_trial is None else trainer.layout_trial.record(),
        lora=None if peft_config is None else LoraSummary(r=peft_config.r, merged=merge_lora),
        train_prompts=len(train),
        steps=outcome.global_step,
        train_loss=outcome.training_loss,
        seconds=seconds,
        prompts_per_second=prompts / seconds if seconds > 0 else math.nan,
        truncated_sequences=truncated,
        sequences=sequences,
        eval=None if evaluation is None else trainer.evaluate(),
        collapse=None if watch is None else watch.history,
        collapse_seconds=None if watch is None else watch.seconds,
    )
    if args.should_save:
        # Written last: its presence marks a finished run. It sits in the model folder, so it does not name that
        # folder (which may be renamed later).
        recorded = {key: value for key, value in result.to_dict().items() if key != "model"}
        write_text_atomic(Path(args.output_dir) / SUMMARY_FILE, json.dumps(recorded, indent=2) + "\n")
    return result


def _training_arguments(
    args: RankingRewardConfig | None, output_dir: str | Path | None, config: dict[str, Any]
) -> RankingRewardConfig:
    """The given training arguments, or those of ``output_dir`` and the keyword settings (not both)."""
    if args is None:
        return RankingRewardConfig(output_dir=str(output_dir), **config)
    if config:
        raise InputValueError(f"give the training settings either as `args` or as keywords, not both: {sorted(config)}")
    return args


def _starting_point(args: RankingRewardConfig, model: str | None, resume: str | bool | None) -> tuple[str | None, int]:
    """The checkpoint to resume from (None: start afresh) and its step."""
    output_dir = args.output_dir
    if model is not None and Path(model).exists() and Path(model).resolve() == Path(output_dir).resolve():
        raise InputValueError(
            f"`output_dir` {str(output_dir)!r} is the model folder itself: training would overwrite the backbone; "
            "give another output folder"
        )
    checkpoint = resume_checkpoint(resume, output_dir, needs_optimizer=not args.save_only_model)
    earlier = checkpoint_folders(output_dir) if checkpoint is None else []
    if earlier:  # a fresh run would mix its checkpoints with these, and a later resume would take the newest
        raise InputValueError(
            f"`output_dir` {str(output_dir)!r} already holds the checkpoints of an earlier run "
            f"({', '.join(path.name for path in earlier)}); add --resume to continue that run, give another "
            "--output, or remove them"
        )
    start_step = _checkpoint_step(checkpoint)
    if checkpoint is not None and args.max_steps > 0 and start_step >= args.max_steps:
        raise InputValueError(
            f"{checkpoint} is at step {start_step}, at or past `max_steps` {args.max_steps}: nothing left to train; "
            "raise --steps, or start without --resume"
        )
    return checkpoint, start_step


def _load_data(source: Any, name: str, input_format: str, skip_invalid: bool, group_pairs: bool = True) -> Any:
    """The ranking rows of ``source``; none left after dropping invalid rows is an error naming ``name``."""
    dataset = load_rankings(source, input_format=input_format, skip_invalid=skip_invalid, group_pairs=group_pairs)
    if len(dataset) == 0:
        raise InputValueError(f"`{name}` has no usable prompt left (every row was invalid); nothing to train on")
    return dataset


def _checkpoint_step(checkpoint: str | None) -> int:
    """The global step a (complete) checkpoint was saved at; 0 without one."""
    if checkpoint is None:
        return 0
    return int(json.loads((Path(checkpoint) / "trainer_state.json").read_text()).get("global_step", 0))


def _save_final_model(trainer: Any, output_dir: Path) -> None:
    """Save the trained model into ``output_dir`` whole: written in a temporary folder, then each file renamed in.

    The folder also holds the checkpoints, so it cannot be swapped as a whole; renames within one folder are
    atomic, so a kill leaves each model file either the previous complete one or the new one, and the summary
    (written after them) is there only when all are.
    """
    if trainer.args.should_save:
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
    if trainer.args.world_size > 1:
        # Every process takes part in a distributed save (FSDP, DeepSpeed gather the weights), into one folder.
        with quiet_transformers():
            trainer.save_model(str(output_dir))
        return
    with staging_directory(output_dir / "final-model") as staging:
        with quiet_transformers():
            trainer.save_model(str(staging))
        for path in sorted(staging.iterdir()):
            os.replace(path, output_dir / path.name)


def score_file(
    *,
    model: str | Path,
    data: Any,
    output: str | Path,
    batch_size: int = ScoreJob.batch_size,
    max_length: int = MAX_LENGTH,
    forward_batch_size: int | None = None,
    precision: str = "auto",
    input_format: str = "auto",
    skip_invalid: bool = False,
    progress: bool = True,
    description: str = "scoring",
    sequence_format: str = "auto",
    shared_prompt: str = "auto",
    shared_prompt_row_tokens: int = ModelInput.shared_prompt_row_tokens,
    base_model: str | None = None,
    pairwise_output: bool = True,
) -> ScoreResult:
    """Score every answer of ``data`` with a trained reward model and write one JSON line per prompt or pair row.

    A file of TRL's pairwise rows (``chosen``/``rejected``; explicit, implicit or conversational prompts) gives one
    output line per input row, in the input's order: the row as given plus ``chosen_reward``, ``rejected_reward``,
    their sigmoids ``normalized_chosen_reward`` and ``normalized_rejected_reward``, and ``indistinguishable`` (of
    its prompt); each distinct answer of a prompt is still scored once, and a row dropped as invalid
    (``skip_invalid``) gets None rewards. For ranking data each output line is the ranking row plus ``rewards``
    (raw scores), ``normalized_rewards`` (their sigmoid, in [0, 1], the scale the paper's loss works on),
    ``truncated`` (how many of its answers were cut at ``max_length``) and ``indistinguishable`` (True when its
    answers were all cut to the same tokens, so their rewards are equal by construction). Cut answers are counted
    and warned about (a ``UserWarning`` with the counts and the fix); indistinguishable prompts are left out of the
    ranking metrics, and when every prompt is one, scoring is refused before the model runs. The settings of the
    model input (``max_length``, ``forward_batch_size``, ``precision``, ``sequence_format``, ``shared_prompt``,
    ``shared_prompt_row_tokens``) are those of :class:`~rewardcollapse.settings.ModelInput`, as in training:
    ``sequence_format="auto"`` reads the model the way it was trained (its saved settings), or else as suits its
    architecture; ``shared_prompt="auto"`` encodes each prompt once for its answers on causal models;
    ``precision="auto"`` uses bf16 where the machine computes it natively. ``base_model``: for a ``model`` folder of
    adapters, the base model to load them on instead of the one their ``adapter_config.json`` names (see
    :func:`~rewardcollapse.training.load_reward_model`). ``pairwise_output=False`` writes a pairwise file as rankings
    too, one line per prompt (what ``diagnose`` reads).

    Returns
    -------
    ScoreResult
        The output file, the prompts and answers scored, the truncation counts, and the ranking metrics of
        :func:`rewardcollapse.diagnostics.ranking_metrics` on the normalised rewards of the prompts whose answers
        the model could tell apart.

    Raises
    ------
    InputValueError
        For bad settings or data, and when ``max_length`` cuts the answers of every prompt to the same tokens.
    """
    settings = ModelInput(
        sequence_format=sequence_format,
        shared_prompt=shared_prompt,
        shared_prompt_row_tokens=shared_prompt_row_tokens,
        max_length=max_length,
        forward_batch_size=forward_batch_size,
        precision=precision,
    )
    check_positive_int(batch_size, "batch_size")
    if isinstance(data, str | Path) and Path(data).is_file() and Path(output).exists():
        if Path(data).resolve() == Path(output).resolve():  # the rewards would replace the answers they score
            raise InputValueError(
                f"`output` {str(output)!r} is the data file itself: scoring would replace it; give another output"
            )
    with locked_output_file(output, "output") as checked:
        return _score(
            checked,
            model=model,
            base_model=base_model,
            data=data,
            settings=settings,
            batch_size=batch_size,
            input_format=input_format,
            skip_invalid=skip_invalid,
            progress=progress,
            description=description,
            pairwise_output=pairwise_output,
        )


def _score(
    output: Path,
    *,
    model: str | Path,
    base_model: str | None,
    data: Any,
    settings: ModelInput,
    batch_size: int,
    input_format: str,
    skip_invalid: bool,
    progress: bool,
    description: str,
    pairwise_output: bool,
) -> ScoreResult:
    """The work of :func:`score_file` once the output file is checked and held."""
    dataset = load_rankings(data, input_format=input_format, skip_invalid=skip_invalid)
    if len(dataset) == 0:
        raise InputValueError(
            f"`data` {str(data)!r} has no usable prompt left (every row was invalid); nothing to score"
        )
    network, tokenizer = load_reward_model(str(model), base_model=base_model)
    max_length = fit_max_length(network, settings.max_length)
    fmt = resolve_sequence_format(settings.sequence_format, network)
    collator = RankingCollator(tokenizer, max_length=max_length, sequence_format=fmt)
    tokenized = tokenize_rankings(dataset, tokenizer, max_length=max_length, name=str(data), sequence_format=fmt)
    cut, indistinguishable = truncation_by_prompt(tokenized)
    _check_truncation(cut, indistinguishable, max_length, lowered=max_length < settings.max_length)
    use_shared, layout = resolve_shared_prompt(settings.shared_prompt, network)
    row_tokens = max(settings.shared_prompt_row_tokens, max_length)
    shared = SharedLayout(row_tokens, when_cheaper=settings.shared_prompt == "auto") if use_shared else None
    scored = score_rankings(
        network,
        collator,
        tokenized,
        batch_size=batch_size,
        forward_batch_size=settings.forward_batch_size,
        precision=choose_precision(settings.precision),
        progress=progress,
        description=description,
        shared=shared,
    )
    table = read_table(data)  # the rows as given: a pairwise file is written back row by row
    given = detect_format(table.column_names) if input_format == "auto" else input_format
    pairwise = pairwise_output and given == "pairwise"
    pair_rows = (table, pair_positions(table, dataset)) if pairwise else None
    normalized, pairs = _write_scores(output, dataset, scored, cut, indistinguishable, pair_rows=pair_rows)
    told_apart = ~np.asarray(indistinguishable)
    return ScoreResult(
        output=str(output),
        sequence_format=fmt,
        layout=layout,
        tokens_saved=None if shared is None else round(shared.stats.saved, 4),
        prompts=len(dataset),
        answers=int(np.isfinite(normalized).sum()),
        max_length=max_length,
        truncated_answers=sum(cut),
        indistinguishable_prompts=int(sum(indistinguishable)),
        **ranking_metrics(normalized[told_apart], pairs[told_apart]),
        pair_rows=len(table) if pairwise else None,
    )


def _check_truncation(cut: list[int], indistinguishable: list[bool], max_length: int, *, lowered: bool) -> None:
    """Warn, in one line with the counts and the fix, when answers were cut; refuse when no prompt is left to rank.

    A prompt whose answers were all cut to the same tokens gets one reward for all of them; when that is every
    prompt, the scores would say nothing, so this refuses before the model runs.
    """
    if not any(cut):
        return
    fix = (
        f"the model reads at most {max_length} positions, so shorten the prompts or answers"
        if lowered
        else "raise --max_length or shorten the prompts"
    )
    same = sum(indistinguishable)
    if same == len(cut):
        raise InputValueError(
            f"`max_length` {max_length} cuts the answers of every prompt ({same}) to the same tokens, so the model "
            f"would give all answers of a prompt one reward and the scores would rank nothing; {fix}"
        )
    flagged = (
        f"; the answers of {same} of {len(cut)} prompts were all cut to the same tokens (equal rewards, no "
        "ranking): flagged `indistinguishable` in the output and left out of the ranking metrics"
        if same
        else ""
    )
    answers = "1 answer was" if sum(cut) == 1 else f"{sum(cut)} answers were"
    warnings.warn(f"{answers} cut at max_length {max_length}{flagged}; {fix}", UserWarning, stacklevel=3)


def _write_scores(
    output: Path,
    dataset: Any,
    scored: Any,
    cut: list[int],
    indistinguishable: list[bool],
    *,
    pair_rows: tuple[Any, list[tuple[int, int, int] | None]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Write the rows with their rewards; return the ``(P, K)`` normalised rewards of the prompts and their pairs.

    Without ``pair_rows`` each ranking row is written as it is scored. With ``pair_rows`` (the input's pairwise
    rows and :func:`~rewardcollapse.data.pair_positions` of their answers) each input row is written instead, in
    the input's order, with the rewards of its chosen and rejected answers (each distinct answer scored once, in
    its prompt's ranking).
    """
    widest = max(2, max_responses(dataset))
    normalized = np.full((len(dataset), widest), np.nan)
    pairs = np.zeros((len(dataset), widest, widest), dtype=bool)
    by_prompt = []
    with atomic_write(output) as handle:  # the previous file stays whole until this one is
        for p, (row, rewards) in enumerate(zip(dataset, scored, strict=True)):
            squashed = special.expit(np.asarray(rewards)).tolist()
            if pair_rows is None:
                scores = {"rewards": rewards, "normalized_rewards": squashed}
                flags = {"truncated": cut[p], "indistinguishable": indistinguishable[p]}
                handle.write(json.dumps({**row, **scores, **flags}) + "\n")
            else:
                by_prompt.append((rewards, squashed, indistinguishable[p]))
            n = len(rewards)
            normalized[p, :n] = squashed
            pairs[p, :n, :n] = ranked_pairs(row)
        if pair_rows is not None:
            for row, position in zip(*pair_rows, strict=True):
                handle.write(json.dumps({**row, **_pair_scores(position, by_prompt)}) + "\n")
    return normalized, pairs


def _pair_scores(position: tuple[int, int, int] | None, by_prompt: list[tuple[Any, Any, bool]]) -> dict[str, Any]:
    """The rewards of a pairwise row's two answers, from its prompt's; None for a row dropped as invalid."""
    if position is None:
        names = ("chosen_reward", "rejected_reward", "normalized_chosen_reward", "normalized_rejected_reward")
        return {**dict.fromkeys(names), "indistinguishable": None}
    p, chosen, rejected = position
    rewards, squashed, indistinguishable = by_prompt[p]
    return {
        "chosen_reward": rewards[chosen],
        "rejected_reward": rewards[rejected],
        "normalized_chosen_reward": squashed[chosen],
        "normalized_rejected_reward": squashed[rejected],
        "indistinguishable": indistinguishable,
    }
