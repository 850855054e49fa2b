"""Where data is looked for, and verified downloads: shared by the image data sets and the corpus.

Search order for every data set: the `data_dir` argument (the CLI's --data-dir), the
OPTIMIZER3_DATA_DIR environment variable, then the user's cache directory. A download is kept
only when the SHA-256 of its bytes (uncompressed, for gzip files) is the canonical one; it is
written atomically, so a failed or interrupted download leaves nothing behind.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence

from optimizer3.files import atomic_path
from optimizer3.tasks.idx import MAX_BYTES, DataError

ENV_VAR = "OPTIMIZER3_DATA_DIR"


def cache_dir() -> pathlib.Path:
    """The user's cache directory for optimizer3's data."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "optimizer3"


def search_path(data_dir: str | os.PathLike[str] | None = None) -> list[pathlib.Path]:
    """The directories searched, in order."""
    places = [pathlib.Path(data_dir)] if data_dir else []
    if os.environ.get(ENV_VAR):
        places.append(pathlib.Path(os.environ[ENV_VAR]))
    places.append(cache_dir())
    return places


def sha256_of(data: bytes, gzipped: bool) -> str:
    """SHA-256 of `data`, or of its contents when `gzipped` (the form canonical values take).

    Raises OSError, EOFError or zlib.error for a broken gzip stream, ValueError for one that
    decompresses to more than MAX_BYTES.
    """
    if gzipped:
        data = gzip.decompress(data)
        if len(data) > MAX_BYTES:
            raise ValueError(f"decompresses to more than {MAX_BYTES} bytes")
    return hashlib.sha256(data).hexdigest()


def check_kept(path: pathlib.Path, expected: str, what: str, gzipped: bool) -> None:
    """Refuse a file already where a download would go that is not the canonical one (a partial
    copy, another data set's file), rather than use it or overwrite it."""
    try:
        digest = sha256_of(path.read_bytes(), gzipped)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        raise DataError(
            f"{path} is unreadable ({error}); move it away so that it can be downloaded again"
        ) from None
    if digest != expected:
        raise DataError(
            f"{path} is not the canonical {what} (SHA-256 {digest[:12]}…, expected {expected[:12]}…); "
            "move it away so that it can be downloaded again"
        )


def fetch_verified(urls: Sequence[str], path: pathlib.Path, expected: str, timeout: float, gzipped: bool) -> None:
    """Download `path` from the first of `urls` that serves bytes with SHA-256 `expected`."""
    failures = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read(MAX_BYTES + 1)
            digest = sha256_of(data, gzipped)
        except urllib.error.HTTPError as error:
            failures.append(f"{url}: HTTP {error.code} {error.reason}")
            continue
        except (urllib.error.URLError, OSError, EOFError, ValueError, zlib.error) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        if digest != expected:
            failures.append(f"{url}: SHA-256 {digest[:12]}… does not match the canonical {expected[:12]}…")
            continue
        try:
            # The folder is made only now, so that a failed download leaves nothing behind.
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
        except OSError as error:
            raise DataError(f"cannot write {path}: {error.strerror or error}") from None
        return
    raise DataError(f"could not download {path.name}: " + "; ".join(failures))
