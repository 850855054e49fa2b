import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer3.tasks.idx import DataError, parse_idx, read_bytes, read_images, read_labels


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_round_trip_raw_and_gzip(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    (tmp_path / "raw").write_bytes(_idx(images))
    (tmp_path / "zipped.gz").write_bytes(gzip.compress(_idx(images)))
    np.testing.assert_array_equal(read_images(tmp_path / "raw"), images)
    np.testing.assert_array_equal(read_images(tmp_path / "zipped.gz"), images)


@pytest.mark.parametrize(
    "data,match",
    [(b"\x00\x00", "too short"),
     (b"\x00\x00\x0d\x03" + b"\x00" * 12, "magic number 0x00000d03"),
     (b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00" * 5, "1 dimensions; expected 3"),
     (b"\x00\x00\x08\x03" + b"\x00" * 4, "truncated inside its header"),
     (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + b"\x00" * 7, "holds 7 data bytes.*truncated or corrupt"),
     (b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + b"\x00" * 9, "holds 9 data bytes.*truncated or corrupt")],
)
def test_malformed_files_are_refused(data, match):
    with pytest.raises(DataError, match=match):
        parse_idx(data, "file", ndim=3)


def test_a_corrupt_gzip_and_a_bad_label_are_refused(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(_idx(np.zeros((3,))))[:20])
    with pytest.raises(DataError, match="not a valid gzip"):
        read_bytes(tmp_path / "bad.gz")
    (tmp_path / "labels").write_bytes(_idx(np.array([1, 2, 12])))
    with pytest.raises(DataError, match="label 12"):
        read_labels(tmp_path / "labels")
    with pytest.raises(DataError, match="Cannot read"):
        read_bytes(tmp_path / "missing")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_parse_or_fail_cleanly(data):
    try:
        array = parse_idx(data, "fuzz", ndim=1)
    except DataError:
        return
    assert array.ndim == 1 and len(data) == 8 + array.size


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=30), st.binary(min_size=1, max_size=8), st.booleans())
def test_a_valid_file_with_bytes_added_or_cut_is_refused(values, extra, cut):
    data = _idx(np.array(values, dtype=np.uint8))
    changed = data[: -len(extra)] if cut and len(values) >= len(extra) else data + extra
    with pytest.raises(DataError, match="truncated or corrupt"):
        parse_idx(changed, "changed", ndim=1)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 255), max_size=30), st.integers(1, 3))
def test_valid_files_always_parse(values, ndim):
    shape = (len(values),) + (1,) * (ndim - 1)
    array = np.array(values, dtype=np.uint8).reshape(shape)
    np.testing.assert_array_equal(parse_idx(_idx(array), "valid", ndim), array)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_arbitrary_files_load_or_fail_cleanly(data, gzipped):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/file.gz"
        with open(path, "wb") as file:
            # Half the cases look like gzip (its magic bytes) but are arbitrary after that.
            file.write(b"\x1f\x8b" + data if gzipped else data)
        try:
            images = read_images(path)
        except DataError:
            return
        assert images.ndim == 3
