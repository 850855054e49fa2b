"""MNIST: where the files are looked for, how they are downloaded and verified, and loading.

Search order: the `data_dir` argument (the CLI's --data-dir), the OPTIMIZER3_DATA_DIR
environment variable, then the user's cache directory. Each place may hold the four files
itself or in a `mnist/` subdirectory, gzip-compressed or not. Any directory holding four files
with MNIST's names and layout is a data set (Fashion-MNIST works too). Only when no place has
them are they downloaded, into the first place searched, from the official mirrors, and the
SHA-256 of their uncompressed bytes is checked against the canonical values.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import os
import pathlib
import urllib.error
import urllib.request

import numpy as np
import torch

from optimizer3.files import atomic_path
from optimizer3.tasks.idx import MAX_BYTES, DataError, read_images, read_labels

ENV_VAR = "OPTIMIZER3_DATA_DIR"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of the canonical uncompressed MNIST files.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IMAGE_SIZE = 28


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Images as float32 in [0, 1] of shape [count, 784]; labels as int64 of shape [count]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: pathlib.Path


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


def _files_in(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Those of the four files that `folder` holds (each raw or .gz)."""
    found = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def find_files(directory: pathlib.Path) -> dict[str, pathlib.Path] | None:
    """The four files in `directory` or its `mnist/` subdirectory, or None if any is missing."""
    for folder in (directory, directory / "mnist"):
        found = _files_in(folder)
        if len(found) == len(FILES):
            return found
    return None


def _incomplete(places: list[pathlib.Path]) -> str:
    """What the places that hold some of the files but not all lack, for an error message."""
    notes = []
    for place in places:
        for folder in (place, place / "mnist"):
            found = _files_in(folder)
            if found:
                missing = [FILES[key] for key in FILES if key not in found]
                notes.append(f"{folder} lacks {', '.join(missing)}")
    return "".join(f" ({note})" for note in notes)


def locate(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
) -> dict[str, pathlib.Path]:
    """Paths of the four MNIST files: found on the search path, or else downloaded from
    `mirrors` (default: the official `MIRRORS`)."""
    places = search_path(data_dir)
    for place in places:
        found = find_files(place)
        if found:
            return found
    looked = ", ".join(str(p) for p in places) + _incomplete(places)
    if not download:
        raise DataError(f"MNIST not found in {looked}; pass --data-dir or set {ENV_VAR}")
    target = places[0] / "mnist" if places[0] == cache_dir() else places[0]
    try:
        return download_files(target, MIRRORS if mirrors is None else mirrors, timeout)
    except DataError as error:
        raise DataError(
            f"MNIST not found in {looked}, and the download failed ({error}); put the four IDX "
            f"files ({', '.join(FILES.values())}, .gz or not) in a directory and pass it with "
            f"--data-dir or {ENV_VAR}"
        ) from None


def download_files(target: pathlib.Path, mirrors: tuple[str, ...], timeout: float) -> dict[str, pathlib.Path]:
    """Download every missing file into `target`, verifying each file's uncompressed SHA-256."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot create {target}: {error.strerror or error}") from None
    paths = {}
    for key, name in FILES.items():
        path = target / f"{name}.gz"
        if path.is_file():
            _check_kept(name, path)
        else:
            _fetch_verified(name, path, mirrors, timeout)
        paths[key] = path
    return paths


def _uncompressed_sha256(compressed: bytes) -> str:
    """SHA-256 of a gzip file's contents, the form in which the canonical values are given."""
    return hashlib.sha256(gzip.decompress(compressed)).hexdigest()


def _check_kept(name: str, path: pathlib.Path) -> None:
    """Refuse a file already in the download directory that is not the canonical one (a
    partial copy, another data set's file), rather than mix it with downloaded ones."""
    try:
        digest = _uncompressed_sha256(path.read_bytes())
    except (OSError, EOFError, ValueError) as error:
        raise DataError(
            f"{path} is unreadable ({error}); move it away so that it can be downloaded again"
        ) from None
    if digest != SHA256[name]:
        raise DataError(
            f"{path} is not the canonical {name} (SHA-256 {digest[:12]}…); move it away so that it "
            "can be downloaded again"
        )


def _fetch_verified(name: str, path: pathlib.Path, mirrors: tuple[str, ...], timeout: float) -> None:
    failures = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                compressed = response.read(MAX_BYTES + 1)
            digest = _uncompressed_sha256(compressed)
        except urllib.error.HTTPError as error:
            failures.append(f"{url}: HTTP {error.code} {error.reason}")
            continue
        except (urllib.error.URLError, OSError, EOFError, ValueError) as error:
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        if digest != SHA256[name]:
            failures.append(f"{url}: SHA-256 {digest[:12]}… does not match the canonical {SHA256[name][:12]}…")
            continue
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(compressed)
        except OSError as error:
            raise DataError(f"cannot write {path}: {error.strerror or error}") from None
        return
    raise DataError(f"could not download {name}: " + "; ".join(failures))


def _as_float_images(images: np.ndarray, name: str) -> torch.Tensor:
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name} holds images of {images.shape[1:]} pixels; expected 28 x 28")
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)


@functools.lru_cache(maxsize=4)
def _load(paths: tuple[tuple[str, pathlib.Path], ...]) -> ImageData:
    files = dict(paths)
    arrays = {
        key: read_images(path) if key.endswith("images") else read_labels(path)
        for key, path in files.items()
    }
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise DataError(
                f"{files[f'{split}_images']} holds {len(images)} images but "
                f"{files[f'{split}_labels']} holds {len(labels)} labels"
            )
    return ImageData(
        train_images=_as_float_images(arrays["train_images"], str(files["train_images"])),
        train_labels=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_images=_as_float_images(arrays["test_images"], str(files["test_images"])),
        test_labels=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        source=files["train_images"].parent,
    )


_ON_DEVICE: dict[tuple[int, torch.device], tuple[ImageData, ImageData]] = {}


def on_device(data: ImageData, device: torch.device) -> ImageData:
    """`data` with its tensors on `device`, copied once per process and device."""
    if device.type == "cpu":
        return data
    key = (id(data), device)
    if key not in _ON_DEVICE or _ON_DEVICE[key][0] is not data:  # an id can be reused
        moved = dataclasses.replace(data, **{
            name: getattr(data, name).to(device) for name in ("train_images", "train_labels", "test_images", "test_labels")
        })
        _ON_DEVICE[key] = (data, moved)
    return _ON_DEVICE[key][1]


def load_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> ImageData:
    """Find (or download) MNIST and load it into memory once per process."""
    files = locate(data_dir, download=download)
    return _load(tuple(sorted((k, p.resolve()) for k, p in files.items())))
