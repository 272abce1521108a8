"""Writing output files whole or not at all: a temporary file beside the final one, flushed, synced and renamed.

A reader (or a rerun after a kill) therefore sees either the previous complete file or the new complete one, never a
truncated one: ``os.replace`` within one folder is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rewardcollapse.core.errors import InputValueError

__all__ = ["atomic_directory", "atomic_path", "atomic_write", "write_text_atomic"]

_UMASK = os.umask(0)  # read the process's umask (the only way is to set it) and put it back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer that takes a file name; rename on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".partial{final.suffix}", dir=final.parent)
    os.close(handle)
    temporary = Path(name)
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes it private; the final file gets the usual permissions
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync and rename it to ``path``."""
    if mode not in ("w", "wb"):
        raise InputValueError(f"`mode` must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as temporary, open(temporary, mode, encoding=None if "b" in mode else encoding) as handle:
        yield handle
        handle.flush()


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_write(path) as handle:
        handle.write(text)
    return Path(path)


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path``; on success it replaces ``path`` (an old one is removed).

    A half-written folder is never at ``path``: after a kill only the temporary ``.<name>.partial`` folder is left,
    and the next call removes it.
    """
    final = Path(path)
    temporary = final.with_name(f".{final.name}.partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)
