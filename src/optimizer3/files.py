"""Atomic file writes: a crash never leaves a half-written result or checkpoint."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Yield a temporary path beside `path`; when the block succeeds, rename it onto `path`.

    The previous file at `path` stays intact until the new one is complete. The temporary
    name keeps the suffix, so writers that infer a format from it (matplotlib) still work.
    """
    path = pathlib.Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(handle)
    tmp = pathlib.Path(name)
    # mkstemp makes the file private (0600); give it the mode an ordinary open() would.
    tmp.chmod(0o666 & ~_umask())
    try:
        yield tmp
        with tmp.open("rb") as file:
            os.fsync(file.fileno())
        os.replace(tmp, path)
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
