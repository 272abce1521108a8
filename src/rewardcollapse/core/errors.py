"""The errors rewardcollapse raises for bad input, so that callers can tell them from bugs.

Each is also the built-in exception its kind of problem calls for (``ValueError`` for a bad value, ``TypeError`` for
a bad type), and its message names the argument, file, row or field, what it got, and the fix. The command line
prints these as one line and exits with status 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError", "InputValueError", "OutputLockedError"]


class InputError(Exception):
    """Base of the errors about a user's input (arguments, configuration, data files)."""


class InputValueError(InputError, ValueError):
    """A value out of range, a malformed row or file, an impossible combination of settings."""


class InputTypeError(InputError, TypeError):
    """An argument or field of the wrong type."""


class OutputLockedError(InputValueError):
    """The output folder or file is being written by another process (which the message names); nothing was done."""
