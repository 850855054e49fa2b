"""Finding, downloading and loading MNIST and Fashion-MNIST; downloads are tested against a server on
127.0.0.1 (the `loopback` fixture)."""

import dataclasses
import gzip
import os
import shutil

import numpy as np
import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.tasks import download, images
from optimizer3.tasks.idx import DataError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    # A system directory of this test's own, empty unless a test fills it (Debian's may exist here).
    _set_system_dir(monkeypatch, tmp_path / "system")


def _set_system_dir(monkeypatch, directory):
    spec = dataclasses.replace(images.DATASETS["fashion-mnist"], system_dirs=(directory,))
    monkeypatch.setitem(images.DATASETS, "fashion-mnist", spec)


def test_loads_real_mnist_with_the_documented_counts(mnist_dir):
    data = images.load_mnist(mnist_dir, download=False)
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert float(data.train_images.min()) == 0.0 and float(data.train_images.max()) == 1.0
    counts = np.bincount(data.train_labels.numpy()).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def test_search_order_flag_then_environment_then_cache(tmp_path, monkeypatch, mnist_dir):
    # All three places hold the files, so each check sees which place wins.
    cached = images.cache_dir() / "mnist"
    shutil.copytree(mnist_dir, cached)
    env_dir = tmp_path / "env"
    shutil.copytree(mnist_dir, env_dir / "mnist")
    monkeypatch.setenv(images.ENV_VAR, str(env_dir))
    flag_dir = tmp_path / "flag"
    shutil.copytree(mnist_dir, flag_dir)
    assert images.locate(flag_dir, download=False)["train_images"].parent == flag_dir
    assert images.locate(None, download=False)["train_images"].parent == env_dir / "mnist"
    monkeypatch.delenv(images.ENV_VAR)
    assert images.locate(tmp_path / "empty", download=False)["train_images"].parent == cached


def test_missing_files_without_download_list_every_place(tmp_path, monkeypatch):
    monkeypatch.setenv(images.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        images.locate(tmp_path / "flag", download=False)
    message = str(info.value)
    for place in (tmp_path / "flag", tmp_path / "env", images.cache_dir()):
        assert str(place) in message
    assert "--data-dir" in message


def test_mismatched_counts_are_refused(tmp_path, mnist_dir):
    bad = tmp_path / "bad"
    shutil.copytree(mnist_dir, bad)
    # Test labels in place of training labels: 10,000 labels for 60,000 images.
    shutil.copy(bad / "t10k-labels-idx1-ubyte.gz", bad / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="60000 images but .* 10000 labels"):
        images.load_mnist(bad, download=False)


def test_download_from_a_good_mirror_verifies_and_stores(tmp_path, mnist_dir, loopback):
    with loopback(mnist_dir) as server:
        files = images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)
    assert files["train_images"] == tmp_path / "data" / "train-images-idx3-ubyte.gz"
    assert images.load_mnist(tmp_path / "data", download=False).train_images.shape == (60000, 784)


def test_a_corrupted_file_is_rejected_and_the_next_mirror_is_used(tmp_path, mnist_dir, loopback):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(mnist_dir, corrupt)
    data = bytearray(gzip.decompress((corrupt / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    data[100] = (data[100] + 1) % 10  # one wrong label: valid IDX, wrong checksum
    (corrupt / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with loopback(corrupt) as bad:
        with pytest.raises(DataError, match="SHA-256"):
            images.locate(tmp_path / "only-bad", mirrors=(bad.url,), timeout=10)
        assert not (tmp_path / "only-bad" / "t10k-labels-idx1-ubyte.gz").exists()
        with loopback(mnist_dir) as good:
            images.locate(tmp_path / "fallback", mirrors=(bad.url, good.url), timeout=10)
    restored = gzip.decompress((tmp_path / "fallback" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert restored == gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())


def test_a_failing_server_gives_a_clear_error(tmp_path, mnist_dir, loopback):
    with loopback(mnist_dir, broken=True) as server:
        with pytest.raises(DataError) as info:
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)
    message = str(info.value)
    assert "download failed" in message and "500" in message and "--data-dir" in message


def test_a_wrong_file_already_in_the_download_directory_is_refused_and_kept(tmp_path, mnist_dir, loopback):
    target = tmp_path / "data"
    target.mkdir()
    stray = target / "train-labels-idx1-ubyte.gz"
    stray.write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())  # the wrong labels
    with loopback(mnist_dir) as server:
        with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not the canonical") as info:
            images.locate(target, mirrors=(server.url,), timeout=10)
    assert "move it away" in str(info.value)
    assert stray.read_bytes() == (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_a_download_that_cannot_be_written_is_a_data_error(tmp_path, mnist_dir, monkeypatch, loopback):
    import contextlib
    import errno

    @contextlib.contextmanager
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(download, "atomic_path", full_disk)
    with loopback(mnist_dir) as server:
        with pytest.raises(DataError, match="cannot write .*No space left on device"):
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)


# Fashion-MNIST: the same reader and search, in a place's fashion-mnist/ subfolder.


def test_loads_real_fashion_mnist_with_the_documented_counts(fashion_dir):
    data = images.load_images("fashion-mnist", fashion_dir.parent, download=False)
    assert data.source == fashion_dir.resolve()
    assert data.train_images.shape == (60000, 784) and data.test_images.shape == (10000, 784)
    assert float(data.train_images.min()) == 0.0 and float(data.train_images.max()) == 1.0
    assert np.bincount(data.train_labels.numpy()).tolist() == [6000] * 10
    assert np.bincount(data.test_labels.numpy()).tolist() == [1000] * 10
    assert images.load_images("fashion-mnist", fashion_dir.parent, download=False) is data  # once per process


def _link(place, target):
    """`place/fashion-mnist`, a link to the folder `target`; returns it."""
    place.mkdir(parents=True, exist_ok=True)
    os.symlink(target, place / "fashion-mnist")
    return place / "fashion-mnist"


def test_fashion_search_order_flag_environment_cache_then_system_directory(tmp_path, monkeypatch, fashion_dir):
    # Every place holds the files, so each check sees which place wins.
    flag = _link(tmp_path / "flag", fashion_dir)
    env = _link(tmp_path / "env", fashion_dir)
    cached = _link(images.cache_dir(), fashion_dir)
    system = tmp_path / "system-copy"
    os.symlink(fashion_dir, system)  # a system directory holds the files itself
    _set_system_dir(monkeypatch, system)
    monkeypatch.setenv(images.ENV_VAR, str(tmp_path / "env"))

    def found(data_dir):
        return images.locate(data_dir, download=False, name="fashion-mnist")["train_images"].parent

    assert found(tmp_path / "flag") == flag
    assert found(None) == env
    monkeypatch.delenv(images.ENV_VAR)
    assert found(tmp_path / "empty") == cached
    cached.unlink()
    assert found(tmp_path / "empty") == system


def test_missing_fashion_mnist_lists_every_place_and_the_subfolder(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.setenv(images.ENV_VAR, str(tmp_path / "env"))
    with pytest.raises(DataError) as info:
        images.locate(mnist_dir, download=False, name="fashion-mnist")  # MNIST's files, directly in the place
    message = str(info.value)
    assert message.startswith("Fashion-MNIST not found in")
    for place in (mnist_dir, tmp_path / "env", images.cache_dir(), tmp_path / "system"):
        assert str(place) in message
    assert f"{mnist_dir} holds IDX files itself, but Fashion-MNIST is read from its fashion-mnist/ subfolder" in message
    assert "--data-dir" in message and "\n" not in message


def test_mnist_and_fashion_mnist_under_one_data_dir_are_not_confused(mnist_dir, fashion_dir):
    shared = mnist_dir.parent  # holds mnist/ and fashion-mnist/
    assert shared == fashion_dir.parent
    assert images.locate(shared, download=False)["train_images"].parent == mnist_dir
    assert images.locate(shared, download=False, name="fashion-mnist")["train_images"].parent == fashion_dir
    mnist = images.load_mnist(shared, download=False)
    fashion = images.load_images("fashion-mnist", shared, download=False)
    assert mnist.source == mnist_dir.resolve() and fashion.source == fashion_dir.resolve()
    assert not torch.equal(mnist.train_images[:100], fashion.train_images[:100])


def test_an_unknown_data_set_is_a_usage_error():
    with pytest.raises(UsageError, match="Unknown image data set: 'cifar'; choose one of mnist, fashion-mnist"):
        images.load_images("cifar")


def test_fashion_download_from_a_good_mirror_verifies_and_stores(tmp_path, fashion_dir, loopback):
    with loopback(fashion_dir) as server:
        files = images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10, name="fashion-mnist")
    target = tmp_path / "data" / "fashion-mnist"
    assert files == {key: target / f"{name}.gz" for key, name in images.FILES.items()}
    for name in images.FILES.values():
        assert gzip.decompress((target / f"{name}.gz").read_bytes()) == \
            gzip.decompress((fashion_dir / f"{name}.gz").read_bytes())
    # Found there from now on, without a download.
    assert images.locate(tmp_path / "data", download=False, name="fashion-mnist") == files


def test_a_corrupted_fashion_download_is_rejected_and_not_written(tmp_path, fashion_dir, mnist_dir, loopback):
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in images.FILES.values():
        os.symlink(fashion_dir / f"{name}.gz", corrupt / f"{name}.gz")
    labels = corrupt / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] = (data[100] + 1) % 10  # one wrong label: valid IDX, wrong checksum
    labels.unlink()
    labels.write_bytes(gzip.compress(bytes(data)))
    with loopback(corrupt) as server:
        with pytest.raises(DataError, match="Fashion-MNIST not found .*download failed.*SHA-256"):
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10, name="fashion-mnist")
    assert not (tmp_path / "data" / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    # MNIST's files are not Fashion-MNIST's: a mirror serving them is refused before anything is written.
    with loopback(mnist_dir) as server:
        with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: SHA-256"):
            images.locate(tmp_path / "other", mirrors=(server.url,), timeout=10, name="fashion-mnist")
    assert not (tmp_path / "other").exists()


def test_a_wrong_file_where_fashion_mnist_would_download_is_refused_and_kept(tmp_path, fashion_dir, mnist_dir, loopback):
    target = tmp_path / "data" / "fashion-mnist"
    target.mkdir(parents=True)
    stray = target / "train-labels-idx1-ubyte.gz"
    stray.write_bytes((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())  # MNIST's labels
    with loopback(fashion_dir) as server:
        with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not the canonical Fashion-MNIST") as info:
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10, name="fashion-mnist")
    assert "move it away" in str(info.value)
    assert stray.read_bytes() == (mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes()


def _tiny_data(count=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return images.ImageData(
        train_images=torch.rand(count, 784, generator=generator), train_labels=torch.arange(count),
        test_images=torch.rand(count + 1, 784, generator=generator), test_labels=torch.arange(count + 1),
        source=__import__("pathlib").Path("nowhere"),
    )


@pytest.mark.parametrize("size", [7, 14])
def test_downsample_averages_each_block(size):
    data = _tiny_data()
    small = images.downsample(data, size)
    block = 28 // size
    for full, reduced in ((data.train_images, small.train_images), (data.test_images, small.test_images)):
        assert reduced.shape == (len(full), size * size) and reduced.dtype == torch.float32
        blocks = full.view(-1, size, block, size, block).mean(dim=(2, 4)).reshape(len(full), -1)
        torch.testing.assert_close(reduced, blocks)
    assert small.train_labels is data.train_labels and small.test_labels is data.test_labels


def test_downsample_to_eight_averages_overlapping_windows_and_is_computed_once():
    data = _tiny_data()
    small = images.downsample(data, 8)
    assert small.train_images.shape == (3, 64) and small.test_images.shape == (4, 64)
    # 28 does not divide by 8: row (and column) i averages pixels floor(3.5 i) to ceil(3.5 (i + 1)).
    square = data.train_images.view(3, 28, 28)
    i, j = 3, 6
    rows, cols = slice(10, 14), slice(21, 25)
    torch.testing.assert_close(small.train_images.view(3, 8, 8)[:, i, j], square[:, rows, cols].mean(dim=(1, 2)))
    assert images.downsample(data, 8) is small
    assert images.downsample(_tiny_data(), 8) is not small  # other data, its own result
    with pytest.raises(UsageError, match="Invalid image size: 29"):
        images.downsample(data, 29)


def test_downsample_real_fashion_mnist(fashion_dir):
    data = images.load_images("fashion-mnist", fashion_dir.parent, download=False)
    small = images.downsample(data, 8)
    assert small.train_images.shape == (60000, 64) and small.test_images.shape == (10000, 64)
    assert 0.0 <= float(small.train_images.min()) and float(small.train_images.max()) <= 1.0
    torch.testing.assert_close(small.train_images.mean(), data.train_images.mean(), rtol=0.02, atol=0.0)
