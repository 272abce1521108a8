"""End-to-end jobs behind ``rewardcollapse train`` and ``rewardcollapse score``: files in, model or rewards out."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import special

from rewardcollapse._files import atomic_write, check_output_file, check_output_folder, write_text_atomic
from rewardcollapse.core.errors import InputValueError
from rewardcollapse.training.checkpoints import resume_checkpoint
from rewardcollapse.training.models import default_backbone, resolve_sequence_format

__all__ = ["SUMMARY_FILE", "TrainJob", "default_backbone", "score_file", "train_reward_model"]

SUMMARY_FILE = "training_summary.json"
"""Written last into a trained model's folder: there only when the model is complete."""


@dataclass
class TrainJob:
    """What a training job reads, beside its :class:`RankingRewardConfig`: the ``rewardcollapse train`` options."""

    data: str = field(
        metadata={"help": "Training data: JSONL, JSON, Parquet or CSV file, datasets folder, or Hub dataset name."}
    )
    eval_data: str | None = field(default=None, metadata={"help": "Evaluation data, in the same formats."})
    model: str | None = field(
        default=None,
        metadata={"help": "Hub name or local path of the backbone; default: the shipped all-MiniLM-L6-v2."},
    )
    input_format: Literal["auto", "ranking", "pairwise", "scored"] = field(
        default="auto", metadata={"help": "Row format of the data; auto: read from its columns."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "Drop invalid rows and report them per reason, instead of stopping."}
    )
    resume: str | None = field(
        default=None,
        metadata={"help": "Continue from this checkpoint folder, or 'latest' (a bare --resume) for the newest one."},
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

    def peft_config(self) -> Any:
        """The ``peft.LoraConfig`` these options ask for, or None without ``lora_r``."""
        if self.lora_r is None:
            if self.merge_lora:
                raise InputValueError("--merge_lora needs LoRA training: give --lora_r as well")
            return None
        if self.lora_r < 1 or not 0 <= self.lora_dropout < 1:
            raise InputValueError(
                f"--lora_r must be >= 1 and --lora_dropout in [0, 1), got {self.lora_r} and {self.lora_dropout}"
            )
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


def train_reward_model(
    *,
    model: str | None,
    data: Any,
    output_dir: str | Path | None = None,
    eval_data: Any = None,
    input_format: str = "auto",
    skip_invalid: bool = False,
    resume: str | bool | None = None,
    args: Any = None,
    peft_config: Any = None,
    merge_lora: bool = False,
    **config: Any,
) -> dict[str, Any]:
    """Load the data and the model, train with :class:`RankingRewardTrainer`, save, and return a summary.

    Parameters
    ----------
    model : str or None
        Hub name or local path of the backbone; None for :func:`default_backbone`.
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
    **config
        :class:`RankingRewardConfig` fields (``utility``, ``max_steps``, ``learning_rate``, ...).

    Returns
    -------
    dict
        Steps, final training loss, wall time, prompts per second, truncated sequences, evaluation metrics and the
        model directory.
    """
    from transformers import set_seed

    from rewardcollapse.data import load_rankings
    from rewardcollapse.training.config import RankingRewardConfig
    from rewardcollapse.training.models import load_reward_model
    from rewardcollapse.training.trainer import RankingRewardTrainer

    if args is None:
        args = RankingRewardConfig(output_dir=str(output_dir), **config)
    elif config:
        raise InputValueError(f"give the training settings either as `args` or as keywords, not both: {sorted(config)}")
    output_dir = args.output_dir
    if args.should_save:
        check_output_folder(output_dir, "output_dir")
    if model is not None and Path(model).exists() and Path(model).resolve() == Path(output_dir).resolve():
        raise InputValueError(
            f"`output_dir` {str(output_dir)!r} is the model folder itself: training would overwrite the backbone; "
            "give another output folder"
        )
    checkpoint = resume_checkpoint(resume, output_dir, needs_optimizer=not args.save_only_model)
    start_step = _checkpoint_step(checkpoint)
    if checkpoint is not None and args.max_steps > 0 and start_step >= args.max_steps:
        raise InputValueError(
            f"{checkpoint} is at step {start_step}, at or past `max_steps` {args.max_steps}: nothing left to train; "
            "raise --steps, or start without --resume"
        )
    train = load_rankings(data, input_format=input_format, skip_invalid=skip_invalid)
    evaluation = None if eval_data is None else load_rankings(eval_data, skip_invalid=skip_invalid)
    for name, dataset in (("data", train), ("eval_data", evaluation)):
        if dataset is not None and len(dataset) == 0:
            raise InputValueError(f"`{name}` has no usable prompt left (every row was invalid); nothing to train on")
    set_seed(args.seed)  # the new score head's initial weights too
    network, tokenizer = load_reward_model(model or default_backbone())
    if merge_lora and peft_config is None:
        raise InputValueError("`merge_lora` needs `peft_config` (LoRA training)")
    trainer = RankingRewardTrainer(
        model=network,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.perf_counter() - start
    if merge_lora:
        trainer.model = trainer.model_wrapped = trainer.model.merge_and_unload()
    _save_final_model(trainer, Path(output_dir))
    truncated, sequences = trainer.truncation_counts()
    # Prompts this run trained on: its own steps (not those before a resume), each at most the whole dataset.
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    prompts = (result.global_step - start_step) * min(per_step, len(train))
    summary = {
        "model": str(output_dir),
        "backbone": model or default_backbone(),
        "utility": args.utility,
        "precision": args.precision,
        "precision_reason": args.precision_reason,
        "sequence_format": trainer.sequence_format,
        "layout": trainer.layout,
        "tokens_saved": None if trainer.shared is None else round(trainer.shared.stats.saved, 4),
        "lora": None if peft_config is None else {"r": peft_config.r, "merged": merge_lora},
        "train_prompts": len(train),
        "steps": result.global_step,
        "train_loss": result.training_loss,
        "seconds": seconds,
        "prompts_per_second": prompts / seconds if seconds > 0 else math.nan,
        "truncated_sequences": truncated,
        "sequences": sequences,
    }
    if evaluation is not None:
        summary["eval"] = trainer.evaluate()
    if args.should_save:
        # Written last: its presence marks a finished run. It sits in the model folder, so it does not name that
        # folder (which may be renamed later).
        recorded = {key: value for key, value in summary.items() if key != "model"}
        write_text_atomic(Path(output_dir) / SUMMARY_FILE, json.dumps(recorded, indent=2) + "\n")
    return summary


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
    from rewardcollapse.training.models import quiet_transformers

    if trainer.args.should_save:
        (output_dir / SUMMARY_FILE).unlink(missing_ok=True)
    if trainer.args.world_size > 1:
        # Every process takes part in a distributed save (FSDP, DeepSpeed gather the weights), into one folder.
        with quiet_transformers():
            trainer.save_model(str(output_dir))
        return
    with tempfile.TemporaryDirectory(prefix=".final-model.", dir=output_dir) as staging:
        with quiet_transformers():
            trainer.save_model(staging)
        for path in sorted(Path(staging).iterdir()):
            os.replace(path, output_dir / path.name)


def _check_positive(**settings: int | None) -> None:
    """Refuse a zero or negative size setting (None means "not set" and passes), naming it."""
    for name, value in settings.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputValueError(f"`{name}` must be a positive integer, got {value!r}")


def score_file(
    *,
    model: str | Path,
    data: Any,
    output: str | Path,
    batch_size: int = 8,
    max_length: int = 512,
    forward_batch_size: int | None = None,
    bf16: bool = False,
    input_format: str = "auto",
    skip_invalid: bool = False,
    progress: bool = True,
    description: str = "scoring",
    sequence_format: str = "auto",
    shared_prompt: str = "auto",
    shared_prompt_row_tokens: int = 4096,
) -> dict[str, Any]:
    """Score every answer of ``data`` with a trained reward model and write one JSON line per prompt.

    Each output line is the ranking row plus ``rewards`` (raw scores) and ``normalized_rewards`` (their sigmoid, in
    [0, 1], the scale the paper's loss works on). Returns the number of prompts and answers and the ranking
    metrics of :func:`rewardcollapse.diagnostics.ranking_metrics` on the normalised rewards.
    ``sequence_format="auto"`` reads the model the way it was trained (its saved settings), or else as suits its
    architecture (:func:`~rewardcollapse.training.models.resolve_sequence_format`). ``shared_prompt`` as in
    :class:`~rewardcollapse.training.RankingRewardConfig`: ``auto`` encodes each prompt once for its answers on
    causal models.
    """
    from rewardcollapse.data import load_rankings, max_responses, ranked_pairs
    from rewardcollapse.diagnostics import ranking_metrics
    from rewardcollapse.training.collator import RankingCollator, tokenize_rankings
    from rewardcollapse.training.models import fit_max_length, load_reward_model
    from rewardcollapse.training.scoring import SharedLayout, score_rankings
    from rewardcollapse.training.shared_prompt import resolve_shared_prompt

    _check_positive(batch_size=batch_size, max_length=max_length, forward_batch_size=forward_batch_size)
    output = check_output_file(output, "output")
    dataset = load_rankings(data, input_format=input_format, skip_invalid=skip_invalid)
    if len(dataset) == 0:
        raise InputValueError(
            f"`data` {str(data)!r} has no usable prompt left (every row was invalid); nothing to score"
        )
    network, tokenizer = load_reward_model(str(model))
    max_length = fit_max_length(network, max_length)
    fmt = resolve_sequence_format(sequence_format, network)
    collator = RankingCollator(tokenizer, max_length=max_length, sequence_format=fmt)
    tokenized = tokenize_rankings(dataset, tokenizer, max_length=max_length, name=str(data), sequence_format=fmt)
    widest = max(2, max_responses(dataset))
    normalized = np.full((len(dataset), widest), np.nan)
    pairs = np.zeros((len(dataset), widest, widest), dtype=bool)
    use_shared, layout = resolve_shared_prompt(shared_prompt, network)
    row_tokens = max(shared_prompt_row_tokens, max_length)
    shared = SharedLayout(row_tokens, when_cheaper=shared_prompt == "auto") if use_shared else None
    scored = score_rankings(
        network,
        collator,
        tokenized,
        batch_size=batch_size,
        forward_batch_size=forward_batch_size,
        bf16=bf16,
        progress=progress,
        description=description,
        shared=shared,
    )
    with atomic_write(output) as handle:  # the previous file stays whole until this one is
        for p, (row, rewards) in enumerate(zip(dataset, scored, strict=True)):
            squashed = special.expit(np.asarray(rewards)).tolist()
            handle.write(json.dumps({**row, "rewards": rewards, "normalized_rewards": squashed}) + "\n")
            n = len(rewards)
            normalized[p, :n] = squashed
            pairs[p, :n, :n] = ranked_pairs(row)
    metrics = ranking_metrics(normalized, pairs) if len(dataset) else {}
    return {
        "output": str(output),
        "sequence_format": fmt,
        "layout": layout,
        **({} if shared is None else {"tokens_saved": round(shared.stats.saved, 4)}),
        "prompts": len(dataset),
        "answers": int(np.isfinite(normalized).sum()),
        **metrics,
    }
