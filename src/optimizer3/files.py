"""Files written safely: atomic writes, failures told plainly, and one process per run directory.

A crash never leaves a half-written result or checkpoint: every file is written beside its
target and renamed onto it. A write that fails for lack of space or permission is a
`WriteError` naming the file and saying that the previous one is intact. A run directory in use
is locked (`lock_run_dir`), so that a second process cannot write into it at the same time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

from optimizer3.errors import Optimizer3Error, RunDirectoryError

# Failures of a write that the user can fix (space, quota, permission, a read-only disk).
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EFBIG}
LOCK_NAME = ".optimizer3.lock"


class WriteError(Optimizer3Error):
    """A file that could not be written (no space, no permission); what was at its path is intact."""


def _write_error(path: pathlib.Path, error: OSError) -> WriteError:
    return WriteError(f"Cannot write {path}: {error.strerror or error}; the previous {path.name}, if any, "
                      "is unchanged")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    The previous file at `path` stays intact until the new one is complete. The temporary
    name keeps the suffix, so writers that infer a format from it (matplotlib) still work.
    Running out of space or permission, here or in the block, raises `WriteError`.
    """
    path = pathlib.Path(path)
    try:
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    except OSError as error:
        if error.errno in USER_ERRNOS:
            raise _write_error(path, error) from None
        raise
    os.close(handle)
    tmp = pathlib.Path(name)
    try:
        # mkstemp makes the file private (0600); give it the mode an ordinary open() would.
        tmp.chmod(0o666 & ~_umask())
        yield tmp
        with tmp.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in USER_ERRNOS:
            raise _write_error(path, error) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """`torch.save` of `obj` to `path`, atomically.

    The bytes are made in memory first: torch's own writer reports a full disk as a
    RuntimeError ("unexpected pos ..."), where a plain file write raises the OSError that
    `atomic_path` turns into a `WriteError`.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


@contextlib.contextmanager
def lock_run_dir(path: pathlib.Path) -> Iterator[None]:
    """Hold the run directory `path` (which must exist) for this process until the block ends;
    refuse with a one-line `RunDirectoryError` if another process holds it.

    The lock is an advisory `flock` on a hidden file in the directory, released by the system
    when the process ends, however it ends.
    """
    lock_file = path / LOCK_NAME
    try:
        handle = open(lock_file, "a+")
    except OSError as error:
        raise RunDirectoryError(f"Cannot use run directory {path}: {error.strerror}; choose another --run-dir") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "unknown"
            raise RunDirectoryError(
                f"Run directory {path} is in use by another optimizer3 process (pid {owner}); wait for it "
                "to finish, or choose another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        handle.close()


def run_dir_files(path: pathlib.Path) -> list[pathlib.Path]:
    """What a run directory holds, but its lock file."""
    return [entry for entry in path.iterdir() if entry.name != LOCK_NAME]
