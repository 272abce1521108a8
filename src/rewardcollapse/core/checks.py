"""Shared checks of the values that several inputs carry: an openness, a positive count, a utility's shift eps.

:func:`read_config_text` reads a settings file a user gives (a YAML configuration, a model's saved settings) after
checking that it is small, so that no file makes a reader spend unbounded time or memory.

Each check names the argument (or the data row, through ``name``), what it got and the fix, and raises
:class:`~rewardcollapse.core.errors.InputValueError` or :class:`~rewardcollapse.core.errors.InputTypeError`. Callers
that collect problems instead of raising (row validation) use the ``*_problem`` twins, which return the message.
"""

from __future__ import annotations

import math
import numbers
from pathlib import Path

from rewardcollapse.core.errors import InputTypeError, InputValueError

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "check_eps",
    "check_openness",
    "check_positive_int",
    "openness_problem",
    "read_config_text",
]

MAX_CONFIG_BYTES = 1 << 16
"""The largest settings file read (64 KiB, parsed in about 0.2 s): the shipped configurations are under 2 KB."""

MAX_CONFIG_DEPTH = 32
"""The deepest nesting of lists and mappings a settings file may have (the shipped ones nest 2 deep)."""


def _is_number(value: object) -> bool:
    """A real number that is not a bool (``True`` is an int in Python, never an openness or a count here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def openness_problem(value: object, name: str = "`openness`") -> str | None:
    """Why ``value`` is no openness (a number in [0, 1]), or None when it is one.

    Examples
    --------
    >>> openness_problem(0.5) is None
    True
    >>> openness_problem(1.5)
    '`openness` must be a number in [0, 1] (0 closed, 1 open-ended), got 1.5'
    """
    if not _is_number(value) or not 0 <= value <= 1:  # NaN fails the range too
        return f"{name} must be a number in [0, 1] (0 closed, 1 open-ended), got {value!r}"
    return None


def check_openness(value: object, name: str = "`openness`") -> float:
    """``value`` as a float openness in [0, 1]; a bad type raises ``InputTypeError``, a bad value ``InputValueError``.

    Examples
    --------
    >>> check_openness(1)
    1.0
    """
    problem = openness_problem(value, name)
    if problem is not None:
        raise (InputValueError if _is_number(value) else InputTypeError)(problem)
    return float(value)


def check_positive_int(value: object, name: str, *, optional: bool = False) -> int | None:
    """``value`` when it is an integer >= 1 (or None with ``optional``), else an error naming ``name``.

    Examples
    --------
    >>> check_positive_int(3, "batch_size")
    3
    >>> check_positive_int(None, "forward_batch_size", optional=True) is None
    True
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        allowed = "a positive integer or None" if optional else "a positive integer"
        raise InputValueError(f"`{name.strip('`')}` must be {allowed}, got {value!r}")
    return int(value)


def check_eps(eps: object) -> float:
    """``eps`` (a utility's shift at 0, :func:`rewardcollapse.utility`) as a float >= 0, else an error naming it.

    Examples
    --------
    >>> check_eps(0.1)
    0.1
    """
    if not isinstance(eps, int | float) or isinstance(eps, bool):
        raise InputTypeError(f"`eps` must be a float, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps >= 0):
        raise InputValueError(f"`eps` must be a finite number >= 0, got {eps}; use eps=0 for the paper's U or e.g. 0.1")
    return float(eps)


def read_config_text(path: str | Path) -> str:
    """The UTF-8 text of a settings file, refused before it is read when it is larger than :data:`MAX_CONFIG_BYTES`.

    Raises
    ------
    InputValueError
        Naming the file, its size and the limit, or that it is not UTF-8 text.
    """
    with Path(path).open("rb") as handle:
        data = handle.read(MAX_CONFIG_BYTES + 1)  # a file that grows while read is cut here, not read whole
    if len(data) > MAX_CONFIG_BYTES:
        raise InputValueError(
            f"{path} is larger than {MAX_CONFIG_BYTES} bytes, the limit for a settings file; a configuration is a few "
            "lines written by hand (see configs/)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputValueError(f"{path} is not UTF-8 text: {error}") from error
