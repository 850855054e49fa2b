"""A character-level language-model corpus: the help topics of the Python Language Reference.

The corpus is CPython 3.11.7's `Lib/pydoc_data/topics.py`: the text of `help("topics")`, about
465,000 characters of real English technical prose with code examples. It was chosen because
it is real text, ships with every CPython (the running interpreter's `pydoc_data/topics.py`),
so that most machines need no download and no package registry, and it is fixed by its
checksum, so that every machine trains on the same characters. Other Python versions ship other
text; their copies are skipped, and the 3.11.7 file is downloaded instead. Licence: the PSF
licence of Python's documentation. SHA-256 of the file (757,011 bytes):
abaa56a64551d8eead1b19cbae3c6db443f99f0cab81df07bed3cb75c0db9346.

Search order: the `data_dir` argument (the CLI's --data-dir), the OPTIMIZER3_DATA_DIR
environment variable, the user's cache (in each, the file `text/pydoc-topics-3.11.7.py`), then
the running Python's own copy if its checksum matches, then a verified download into the first
place. The file is never imported or run: its one dict literal is read with `ast`.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import os
import pathlib
import sysconfig

import numpy as np
import torch

from optimizer3.tasks.download import ENV_VAR, check_kept, fetch_verified, search_path
from optimizer3.tasks.idx import DataError

FILE = pathlib.Path("text") / "pydoc-topics-3.11.7.py"
SHA256 = "abaa56a64551d8eead1b19cbae3c6db443f99f0cab81df07bed3cb75c0db9346"
WHAT = "CPython 3.11.7 Lib/pydoc_data/topics.py"
URLS = ("https://raw.githubusercontent.com/python/cpython/v3.11.7/Lib/pydoc_data/topics.py",)
# The running Python's copy, found without importing it.
PYTHON_COPY = pathlib.Path(sysconfig.get_path("stdlib")) / "pydoc_data" / "topics.py"
SPLITS = (0.8, 0.9)  # train | heldout | test boundaries, as fractions of the text


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The text as int64 character ids, split in order 80/10/10; id i is the character vocab[i]."""

    train: torch.Tensor  # the first 80%, for meta-training
    heldout: torch.Tensor  # the next 10%, for the benchmark's optimization runs
    test: torch.Tensor  # the last 10%, for held-out loss
    vocab: str  # the distinct characters, sorted
    source: pathlib.Path


def _sha256(path: pathlib.Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}") from None


def locate_corpus(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    urls: tuple[str, ...] = URLS,
    timeout: float = 30.0,
) -> pathlib.Path:
    """The corpus file: found on the search path (and verified), the running Python's copy if
    it is the same file, or else downloaded from `urls` and verified."""
    places = search_path(data_dir)
    for place in places:
        path = place / FILE
        if path.is_file():
            check_kept(path, SHA256, WHAT, gzipped=False)
            return path
    if PYTHON_COPY.is_file():
        digest = _sha256(PYTHON_COPY)
        if digest == SHA256:
            return PYTHON_COPY
        skipped = f" ({PYTHON_COPY}, this Python's copy, is another version's: SHA-256 {digest[:12]}…)"
    else:
        skipped = f" ({PYTHON_COPY}, this Python's copy, is missing)"
    looked = ", ".join(str(place / FILE) for place in places) + skipped
    advice = (f"put {WHAT} (SHA-256 {SHA256[:12]}…) at {FILE} in a directory and pass it with --data-dir "
              f"or {ENV_VAR}")
    if not download:
        raise DataError(f"The text corpus was not found in {looked}; {advice}")
    target = places[0] / FILE
    try:
        fetch_verified(urls, target, SHA256, timeout, gzipped=False)
    except DataError as error:
        raise DataError(f"The text corpus was not found in {looked}, and the download failed ({error}); "
                        f"{advice}") from None
    return target


def read_text(path: pathlib.Path) -> str:
    """The help topics in `path`, in sorted key order, joined by newlines; read with `ast`,
    never run."""
    try:
        module = ast.parse(path.read_bytes(), filename=str(path))
        values = [
            ast.literal_eval(node.value) for node in module.body
            if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["topics"]
        ]
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{path} is not a pydoc topics file ({error}); move it away") from None
    if len(values) != 1 or not isinstance(values[0], dict) or not all(isinstance(v, str) for v in values[0].values()):
        raise DataError(f"{path} does not assign one dict of strings to `topics`; move it away")
    topics = values[0]
    return "\n".join(topics[key] for key in sorted(topics))


@functools.lru_cache(maxsize=2)
def _load(path: pathlib.Path) -> Corpus:
    text = read_text(path)
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    points, ids = np.unique(codes, return_inverse=True)
    ids = torch.from_numpy(ids.astype(np.int64))
    first, second = (int(len(ids) * fraction) for fraction in SPLITS)
    return Corpus(train=ids[:first], heldout=ids[first:second], test=ids[second:],
                  vocab="".join(map(chr, points)), source=path)


def load_corpus(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Corpus:
    """Find (or download) the corpus and load it into memory once per process."""
    return _load(locate_corpus(data_dir, download=download).resolve())
