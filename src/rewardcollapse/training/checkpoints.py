"""Which Trainer checkpoints are complete, so that a resume never starts from a half-written one.

``transformers.Trainer`` writes a checkpoint in place, in this order: the model weights, then the optimizer,
scheduler and RNG states, then ``trainer_state.json`` last. A job killed in the middle leaves a ``checkpoint-N``
folder without some of those files, and ``transformers.trainer_utils.get_last_checkpoint`` returns it anyway, so
resuming fails (or silently restarts the optimizer). Here a checkpoint counts as complete when its
``trainer_state.json`` reads as JSON and its weights are all present; the optimizer and scheduler are required too
unless the run saves only the model.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from rewardcollapse.core.errors import InputValueError

__all__ = ["checkpoint_folders", "checkpoint_problem", "last_complete_checkpoint", "resume_checkpoint"]

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin")
_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _weights_problem(folder: Path) -> str | None:
    if any((folder / name).is_file() for name in _WEIGHTS):
        return None
    for name in _INDEXES:
        index = folder / name
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (ValueError, KeyError, TypeError):
                return f"{name} is not a complete weight index"
            missing = sorted(shard for shard in shards if not (folder / shard).is_file())
            return f"weight shards missing: {', '.join(missing)}" if missing else None
    if any(folder.glob("global_step*")) or any(folder.glob("pytorch_model_fsdp*")):
        return None  # DeepSpeed or FSDP sharded state: its own loader checks the pieces
    return f"no model weights ({' or '.join(_WEIGHTS[:2])})"


def checkpoint_problem(folder: str | Path, *, needs_optimizer: bool = True) -> str | None:
    """What is missing from a Trainer checkpoint folder, or None when it is complete."""
    folder = Path(folder)
    if not folder.is_dir():
        return "not a folder"
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except FileNotFoundError:
        return "no trainer_state.json (the Trainer writes it last: the checkpoint was interrupted)"
    except ValueError:
        return "trainer_state.json is cut short (the checkpoint was interrupted)"
    problem = _weights_problem(folder)
    if problem:
        return problem
    if needs_optimizer:
        missing = [name for name in ("optimizer.pt", "scheduler.pt") if not (folder / name).is_file()]
        if missing and not any(folder.glob("global_step*")):
            return f"no {' or '.join(missing)}"
    return None


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, complete or not, oldest step first (none: an empty list)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    numbered = [(int(match.group(1)), path) for path in folder.iterdir() if (match := _CHECKPOINT.match(path.name))]
    return [path for _, path in sorted(numbered)]


def last_complete_checkpoint(output_dir: str | Path, *, needs_optimizer: bool = True) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``output_dir``; newer incomplete ones are skipped with a warning.

    Returns None when the folder has no complete checkpoint.
    """
    for path in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(path, needs_optimizer=needs_optimizer)
        if problem is None:
            return path
        warnings.warn(f"skipping incomplete checkpoint {path}: {problem}", UserWarning, stacklevel=2)
    return None


def resume_checkpoint(resume: str | bool | None, output_dir: str | Path, *, needs_optimizer: bool = True) -> str | None:
    """The checkpoint a ``resume`` setting means: True for the newest complete one, a folder (checked), or None."""
    if resume is None or resume is False:
        return None
    if resume is True:
        found = last_complete_checkpoint(output_dir, needs_optimizer=needs_optimizer)
        if found is None:
            raise InputValueError(
                f"`resume`: no complete checkpoint-* folder in {str(output_dir)!r} to resume from; "
                "train without --resume to start fresh"
            )
        return str(found)
    problem = checkpoint_problem(resume, needs_optimizer=needs_optimizer)
    if problem:
        raise InputValueError(
            f"`resume`: {str(resume)!r} is not a complete checkpoint ({problem}); give another checkpoint folder, "
            "or a bare --resume for the newest complete one"
        )
    return str(resume)
