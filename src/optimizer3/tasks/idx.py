"""The IDX file format of MNIST, read strictly: every malformed file is a clear error.

An IDX file is a big-endian header (two zero bytes, a type code, the number of dimensions,
then one 32-bit size per dimension) followed by the data. MNIST uses unsigned bytes (type
0x08): images are 3-dimensional (count, rows, columns) and labels 1-dimensional.

References: LeCun, Cortes and Burges, "The MNIST database of handwritten digits".
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import struct
import zlib

import numpy as np

from optimizer3.errors import Optimizer3Error

UNSIGNED_BYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
# No MNIST file decompresses to more than this; a larger stream is refused, not read.
MAX_BYTES = 64 * 1024 * 1024


class DataError(Optimizer3Error):
    """A data file that is missing, malformed, or not what it claims to be."""


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The file's contents, decompressed when it is gzip (by content, not by name)."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"Cannot read {path}: {error.strerror or error}") from None
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(MAX_BYTES + 1)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is not a valid gzip file ({error}); replace it") from None
    if len(data) > MAX_BYTES:
        raise DataError(f"{path} decompresses to more than {MAX_BYTES} bytes: not an MNIST file")
    return data


def parse_idx(data: bytes, name: str, ndim: int) -> np.ndarray:
    """Parse IDX bytes holding unsigned bytes with `ndim` dimensions; `name` is for errors."""
    if len(data) < 4:
        raise DataError(f"{name} is too short ({len(data)} bytes) to be an IDX file")
    zero, type_code, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code != UNSIGNED_BYTE:
        raise DataError(
            f"{name} has magic number 0x{int.from_bytes(data[:4], 'big'):08x}; "
            f"expected 0x{UNSIGNED_BYTE << 8 | ndim:08x} for an IDX file of unsigned bytes"
        )
    if dims != ndim:
        raise DataError(f"{name} has {dims} dimensions; expected {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name} is truncated inside its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != expected:
        raise DataError(
            f"{name} holds {len(data) - header} data bytes but its header says {shape} "
            f"({expected} bytes): the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_images(path: str | os.PathLike[str]) -> np.ndarray:
    """Images of shape [count, rows, columns] from an IDX file (gzip or raw)."""
    return parse_idx(read_bytes(path), str(path), ndim=3)


def read_labels(path: str | os.PathLike[str], classes: int = 10) -> np.ndarray:
    """Labels of shape [count] from an IDX file, each checked to be below `classes`."""
    labels = parse_idx(read_bytes(path), str(path), ndim=1)
    if labels.size and int(labels.max()) >= classes:
        raise DataError(f"{path} holds label {int(labels.max())}; labels must be 0 to {classes - 1}")
    return labels
