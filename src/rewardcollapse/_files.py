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

__all__ = [
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "write_text_atomic",
]

_UMASK = os.umask(0)  # read the process's umask (the only way is to set it) and put it back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer that takes a file name; rename on success.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    final = Path(path)
    if final.is_symlink():  # write through a link to its target, as an in-place write would; keep the link
        final = final.resolve()
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

    A half-written folder is never at ``path``, and the old folder stays whole until the new one is complete. Each
    writer gets its own temporary folder (``.<name>.partial-<pid>-<random>``), so two writers to one path never mix
    their files: each finishes with a whole folder and the last to finish stays. A folder left by a killed writer
    is removed by the next call once its process is gone.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    os.chmod(temporary, 0o777 & ~_UMASK)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(temporary, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_orphans(final: Path) -> None:
    """Remove the temporary folders of ``final`` whose writer process no longer runs."""
    for kind in ("partial", "old"):
        for leftover in final.parent.glob(f".{final.name}.{kind}-*"):
            pid = leftover.name.removeprefix(f".{final.name}.{kind}-").split("-", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                shutil.rmtree(leftover, ignore_errors=True)


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_output_folder(path: str | Path, option: str) -> Path:
    """Make sure ``path`` is, or can become, a folder this process can write in; before any work is done.

    Creates the folder (and its parents) and writes and removes a probe file, so that a job does not run for an
    hour and then fail at its final save. Raises an :class:`InputValueError` naming ``option`` otherwise.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputValueError(f"`{option}` {str(folder)!r} is an existing file, not a folder; give a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-probe.", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise InputValueError(
            f"`{option}` {str(folder)!r} cannot be written: {error.strerror or error}; choose a writable folder"
        ) from error
    return folder


def check_output_file(path: str | Path, option: str) -> Path:
    """Make sure ``path`` can be written as a file (its folder writable, the path not a folder); before any work."""
    final = Path(path)
    if final.is_dir():
        raise InputValueError(f"`{option}` {str(final)!r} is a folder; give a file path")
    check_output_folder(final.parent, option)
    return final
