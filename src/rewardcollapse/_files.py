"""Writing outputs safely: whole or not at all, one writer at a time, nothing left behind by a failure.

Each file is written to a temporary name beside the final one, flushed, synced and renamed, so a reader (or a rerun
after a kill) sees either the previous complete file or the new complete one, never a truncated one: ``os.replace``
within one folder is atomic on POSIX and Windows. Temporary names carry the writer's process id, and the next write to
the same path removes those of processes that no longer run.

A job's output folder (or file) is held with an operating-system lock on a hidden lock file for the whole job
(:func:`locked_output_folder`, :func:`locked_output_file`): a second writer is refused at once with an
:class:`~rewardcollapse.core.errors.OutputLockedError` naming the holder, and the lock of a process that died (even by
SIGKILL) is released by the operating system, so the next run takes it over.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import shlex
import shutil
import socket
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

if os.name == "nt":
    import msvcrt
else:
    import fcntl

from rewardcollapse.core.errors import InputValueError, OutputLockedError

_WINDOWS = os.name == "nt"

__all__ = [
    "LOCK_FILE",
    "atomic_directory",
    "atomic_path",
    "atomic_write",
    "check_output_file",
    "check_output_folder",
    "locked_output_file",
    "locked_output_folder",
    "staging_directory",
    "write_text_atomic",
]

LOCK_FILE = ".rewardcollapse.lock"
"""The hidden lock file inside an output folder while a job writes it (removed when the job ends)."""

_WINDOWS_LOCK_BYTE = 1 << 30  # msvcrt locks bytes against reading too: lock one past the holder's details
_CONTENDED = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)})

_UMASK = os.umask(0)  # read the process's umask (the only way is to set it) and put it back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) for a writer that takes a file name; rename on success.

    On an exception the temporary file is removed and ``path`` is left as it was. The temporary name
    (``.<name>.partial-<pid>-<random><suffix>``) carries this process's id: one left by a killed writer is removed by
    the next write to ``path`` once its process is gone.
    """
    final = Path(path)
    if final.is_symlink():  # write through a link to its target, as an in-place write would; keep the link
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    prefix = f".{final.name}.partial-{os.getpid()}-"
    handle, name = tempfile.mkstemp(prefix=prefix, suffix=final.suffix, dir=final.parent)
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
    with staging_directory(final) as temporary:
        yield temporary
        old = None
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-{os.getpid()}-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(temporary, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staging_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``path`` (``.<name>.partial-<pid>-<random>``), removed on exit.

    What the body moves out of it stays; the rest goes. A folder left by a killed process is removed by the next call
    for the same ``path`` once that process is gone.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(final)
    temporary = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    os.chmod(temporary, 0o777 & ~_UMASK)
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _remove_orphans(final: Path) -> None:
    """Remove the temporary files and folders of ``final`` whose writer process no longer runs."""
    for kind in ("partial", "old"):
        for leftover in final.parent.glob(f".{final.name}.{kind}-*"):
            pid = leftover.name.removeprefix(f".{final.name}.{kind}-").split("-", 1)[0]
            if pid.isdigit() and not _running(int(pid)):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs; where that cannot be told safely, True (its leftovers are kept, never lost)."""
    if pid == os.getpid():
        return True
    if _WINDOWS:  # there os.kill(pid, 0) is no probe: signal 0 is CTRL_C_EVENT, sent to the process
        try:
            import psutil  # installed with the train extra (accelerate needs it)
        except ImportError:
            return True
        return psutil.pid_exists(pid)
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


@contextlib.contextmanager
def locked_output_folder(path: str | Path, option: str) -> Iterator[Path]:
    """Check ``path`` as :func:`check_output_folder` does, then hold it for the job that runs in the ``with`` body.

    The lock is the hidden file :data:`LOCK_FILE` in the folder, holding the holder's process id, host, start time
    and command; it is removed when the job ends. Another process holding it raises an
    :class:`~rewardcollapse.core.errors.OutputLockedError` at once (no waiting) that names it; a lock whose process
    died is taken over. When the job fails, the folders this call created are removed if they are still empty.
    """
    folder = Path(path)
    with _guarded(folder, option, check_output_folder, folder / LOCK_FILE) as checked:
        yield checked


@contextlib.contextmanager
def locked_output_file(path: str | Path, option: str) -> Iterator[Path]:
    """Check ``path`` as :func:`check_output_file` does, then hold it for the job that runs in the ``with`` body.

    As :func:`locked_output_folder`, with the hidden lock file ``.<name>.lock`` beside the file: jobs writing other
    files of the same folder do not wait for each other.
    """
    final = Path(path)
    target = final.resolve() if final.is_symlink() else final  # a link is written through: lock what it points to
    with _guarded(final, option, check_output_file, target.parent / f".{target.name}.lock") as checked:
        yield checked


@contextlib.contextmanager
def _guarded(output: Path, option: str, check: Callable[[Path, str], Path], lock_file: Path) -> Iterator[Path]:
    """Check ``output``, hold ``lock_file`` while the body runs, and on failure remove the folders made for it."""
    created = _missing_folders(lock_file.parent)
    try:
        checked = check(output, option)
        descriptor = _acquire(lock_file, output, option)
        try:
            yield checked
        finally:
            _release(lock_file, descriptor)
    except BaseException:
        for folder in created:  # deepest first; one that holds anything stays, and so do its parents
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing.append(candidate)
    return missing


def _acquire(lock_file: Path, output: Path, option: str) -> int | None:
    """Lock ``lock_file`` (made if missing) without waiting and write this process's details into it.

    Returns the open descriptor, which holds the lock until it is closed (by :func:`_release`, or by the operating
    system when the process ends, however it ends); None where the file system has no locks (with a warning).

    Written with ``fcntl.flock`` / ``msvcrt.locking`` rather than the ``filelock`` package: a refused writer reads the
    holder's details from the file, and the file is removed on release, which filelock's Unix lock never does.
    Removing it is safe because it happens while the lock is held and a process that locked a file no longer at the
    path (removed by the holder it waited for) closes it and tries again.
    """
    not_a_file = InputValueError(
        f"`{option}` {str(output)!r}: its lock file {str(lock_file)!r} is not a plain file (a link or a folder); "
        "remove it (no job of ours makes one), or choose another output"
    )
    while True:
        try:
            # O_NOFOLLOW: a link at the lock path must not have its target overwritten with the holder's details
            descriptor = os.open(lock_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except FileNotFoundError:  # a failing job that had made the folder removed it a moment ago
            lock_file.parent.mkdir(parents=True, exist_ok=True)
            continue
        except PermissionError as error:  # e.g. left by another user's job that was killed
            if lock_file.is_dir() or lock_file.is_symlink():
                raise not_a_file from error
            raise InputValueError(
                f"`{option}` {str(output)!r}: cannot open its lock file {str(lock_file)!r} ({error.strerror}); "
                "remove it if no job is writing there, or choose another output"
            ) from error
        except OSError as error:  # ELOOP for a link (O_NOFOLLOW), EISDIR for a folder
            if error.errno in (errno.ELOOP, errno.EISDIR) or lock_file.is_dir() or lock_file.is_symlink():
                raise not_a_file from error
            raise
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a fifo or a device: nothing to lock or write into
            os.close(descriptor)
            raise not_a_file
        try:
            _lock(descriptor)
        except OSError as error:
            holder = _read_holder(descriptor) if error.errno in _CONTENDED else None
            os.close(descriptor)
            if error.errno not in _CONTENDED:
                warnings.warn(
                    f"cannot lock {lock_file} ({error.strerror or error}): this file system has no file locks, so "
                    f"another job writing {output} at the same time would not be stopped",
                    stacklevel=4,
                )
                return None
            raise OutputLockedError(
                f"`{option}` {str(output)!r} is being written by another process ({holder}); wait for it to end, or "
                "choose another output"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(descriptor), os.stat(lock_file)):
                _write_holder(descriptor)
                return descriptor
        os.close(descriptor)  # the holder removed this file as it ended: lock the one now at the path


def _lock(descriptor: int) -> None:
    """Take the operating system's exclusive lock on an open file, or raise ``OSError`` at once."""
    if _WINDOWS:
        os.lseek(descriptor, _WINDOWS_LOCK_BYTE, os.SEEK_SET)
        msvcrt.locking(descriptor, msvcrt.LK_NBLCK, 1)
    else:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _release(lock_file: Path, descriptor: int | None) -> None:
    """Remove the lock file and release the lock (closing the descriptor releases it)."""
    if descriptor is None:
        return
    if _WINDOWS:  # Windows cannot remove an open file: remove it after closing, unless another job opened it
        os.close(descriptor)
        with contextlib.suppress(OSError):
            lock_file.unlink()
        return
    try:
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(descriptor), os.stat(lock_file)):
                lock_file.unlink()  # still held: whoever opened it meanwhile finds it gone once it gets the lock
    finally:
        os.close(descriptor)


def _write_holder(descriptor: int) -> None:
    """Write this process's id, host, start time and command into the lock file, for a refused writer's message."""
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": command.replace("\n", " ")[:300],
    }
    text = json.dumps(holder).encode()
    os.lseek(descriptor, 0, os.SEEK_SET)
    os.write(descriptor, text)
    os.ftruncate(descriptor, len(text))


def _read_holder(descriptor: int) -> str:
    """The holder's details from its lock file, as a phrase for the refusal."""
    for _ in range(20):  # the holder writes them right after locking: give it a moment
        os.lseek(descriptor, 0, os.SEEK_SET)
        raw = os.read(descriptor, 4096)
        try:
            holder = json.loads(raw)
            return f"pid {holder['pid']} on {holder['host']}, since {holder['started']}: {holder['command']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.01)
    return "its process has not written its details into the lock file yet"
