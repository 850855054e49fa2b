"""Image data sets (MNIST, Fashion-MNIST): where the files are looked for, and loading.

Each data set is one `ImageSpec` in `DATASETS`. Search order: the `data_dir` argument (the
CLI's --data-dir), the OPTIMIZER3_DATA_DIR environment variable, the user's cache directory,
then the data set's system directories (Fashion-MNIST: where Debian's `dataset-fashion-mnist`
package installs it). Fashion-MNIST's files have MNIST's names, so in each of the first three
places it is looked for only in a `fashion-mnist/` subfolder; MNIST is looked for in the place
itself or its `mnist/` subfolder. One folder holding `mnist/` and `fashion-mnist/` serves both.
Files may be gzip-compressed or not. Only when no place has the four files are they downloaded,
into the first place searched, and the SHA-256 of their uncompressed bytes is checked against
the canonical values (see `optimizer3.tasks.download`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.download import ENV_VAR, cache_dir, check_kept, fetch_verified, search_path  # noqa: F401
from optimizer3.tasks.idx import DataError, read_images, read_labels

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IMAGE_SIZE = 28


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """One data set of four IDX files with MNIST's names and 28 x 28 images in ten classes."""

    display: str  # its name in messages
    folder: str  # the subfolder of a place that holds it
    sha256: dict[str, str]  # file name -> SHA-256 of the uncompressed file
    mirrors: tuple[str, ...]  # URLs that the file names are appended to (with .gz)
    system_dirs: tuple[pathlib.Path, ...] = ()  # searched after the user's places, files in them directly
    in_place: bool = False  # whether a place may hold the files itself, not only in `folder`


MNIST = ImageSpec(
    display="MNIST",
    folder="mnist",
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    in_place=True,  # as before Fashion-MNIST came: --data-dir may point at the four files
)
FASHION_MNIST = ImageSpec(
    display="Fashion-MNIST",
    folder="fashion-mnist",
    sha256={
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
    system_dirs=(pathlib.Path("/usr/share/datasets/fashion-mnist"),),  # apt-get install dataset-fashion-mnist
)
DATASETS = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}
# MNIST's mirrors under their old name; read when a download starts, so that setting it still works.


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Images as float32 in [0, 1] of shape [count, pixels]; labels as int64 of shape [count]."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: pathlib.Path


def spec_named(name: str) -> ImageSpec:
    """The spec of the data set `name` (a key of DATASETS)."""
    if name not in DATASETS:
        raise UsageError(f"Unknown image data set: {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _folders(place: pathlib.Path, spec: ImageSpec) -> tuple[pathlib.Path, ...]:
    """The folders of a user's place that may hold the data set."""
    return (place, place / spec.folder) if spec.in_place else (place / spec.folder,)


def _files_in(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """Those of the four files that `folder` holds (each raw or .gz)."""
    found = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def find_files(directory: pathlib.Path, name: str = "mnist") -> dict[str, pathlib.Path] | None:
    """The four files of data set `name` in the place `directory`, or None if any is missing."""
    for folder in _folders(directory, spec_named(name)):
        found = _files_in(folder)
        if len(found) == len(FILES):
            return found
    return None


def _notes(places: list[pathlib.Path], spec: ImageSpec) -> str:
    """What the places that hold some of the files lack, for an error message."""
    notes = []
    for place in places:
        for folder in _folders(place, spec):
            found = _files_in(folder)
            if found:
                missing = [FILES[key] for key in FILES if key not in found]
                notes.append(f"{folder} lacks {', '.join(missing)}")
        if not spec.in_place and len(_files_in(place)) == len(FILES):
            notes.append(f"{place} holds IDX files itself, but {spec.display} is read from its {spec.folder}/ subfolder")
    return "".join(f" ({note})" for note in notes)


def locate(
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: tuple[str, ...] | None = None,
    timeout: float = 30.0,
    name: str = "mnist",
) -> dict[str, pathlib.Path]:
    """Paths of the four files of data set `name`: found on the search path or in its system
    directories, or else downloaded from `mirrors` (default: the spec's official mirrors)."""
    spec = spec_named(name)
    places = search_path(data_dir)
    for place in places:
        found = find_files(place, name)
        if found:
            return found
    for system_dir in spec.system_dirs:
        found = _files_in(system_dir)
        if len(found) == len(FILES):
            return found
    looked = ", ".join(str(p) for p in [*places, *spec.system_dirs]) + _notes(places, spec)
    where = "a directory" if spec.in_place else f"the {spec.folder}/ folder of a directory"
    advice = (f"put the four IDX files ({', '.join(FILES.values())}, .gz or not) in {where} and pass it with "
              f"--data-dir or {ENV_VAR}")
    if not download:
        raise DataError(f"{spec.display} not found in {looked}; {advice}")
    in_folder = not spec.in_place or places[0] == cache_dir()
    target = places[0] / spec.folder if in_folder else places[0]
    if mirrors is None:
        mirrors = spec.mirrors
    try:
        return download_files(target, mirrors, timeout, name)
    except DataError as error:
        raise DataError(f"{spec.display} not found in {looked}, and the download failed ({error}); {advice}") from None


def download_files(target: pathlib.Path, mirrors: tuple[str, ...], timeout: float,
                   name: str = "mnist") -> dict[str, pathlib.Path]:
    """Download every missing file of data set `name` into `target`, verifying each file's
    uncompressed SHA-256; a file already there must be the canonical one."""
    spec = spec_named(name)
    paths = {}
    for key, file_name in FILES.items():
        path = target / f"{file_name}.gz"
        expected = spec.sha256[file_name]
        if path.is_file():
            check_kept(path, expected, f"{spec.display} {file_name}", gzipped=True)
        else:
            fetch_verified([f"{mirror}{file_name}.gz" for mirror in mirrors], path, expected, timeout, gzipped=True)
        paths[key] = path
    return paths


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


_DOWNSAMPLED: dict[tuple[int, int], tuple[ImageData, ImageData]] = {}


def downsample(data: ImageData, size: int) -> ImageData:
    """`data` with each image area-averaged from 28 x 28 to `size` x `size` pixels (images of
    shape [count, size * size]), for cheaper tasks; computed once per process, data and size."""
    if not 1 <= size <= IMAGE_SIZE:
        raise UsageError(f"Invalid image size: {size}; use 1 to {IMAGE_SIZE}")
    if data.train_images.shape[1] != IMAGE_SIZE * IMAGE_SIZE:
        raise UsageError(f"downsample takes 28 x 28 images; these have {data.train_images.shape[1]} pixels")
    key = (id(data), size)
    if key not in _DOWNSAMPLED or _DOWNSAMPLED[key][0] is not data:  # an id can be reused
        def pool(images: torch.Tensor) -> torch.Tensor:
            square = images.view(len(images), 1, IMAGE_SIZE, IMAGE_SIZE)
            return F.adaptive_avg_pool2d(square, size).reshape(len(images), size * size)

        small = dataclasses.replace(data, train_images=pool(data.train_images), test_images=pool(data.test_images))
        _DOWNSAMPLED[key] = (data, small)
    return _DOWNSAMPLED[key][1]


def load_images(name: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> ImageData:
    """Find (or download) the image data set `name` (a key of DATASETS) and load it into memory
    once per process."""
    files = locate(data_dir, download=download, name=name)
    return _load(tuple(sorted((k, p.resolve()) for k, p in files.items())))


def load_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> ImageData:
    """Find (or download) MNIST and load it into memory once per process."""
    return load_images("mnist", data_dir, download)
