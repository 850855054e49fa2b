"""Finding, downloading and loading MNIST; downloads are tested against a server on 127.0.0.1."""

import functools
import gzip
import http.server
import shutil
import threading

import numpy as np
import pytest

from optimizer3.tasks import images
from optimizer3.tasks.idx import DataError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv(images.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


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


class _Server:
    """Serves a directory on 127.0.0.1; `broken` answers every request with HTTP 500."""

    def __init__(self, root, broken=False):
        handler = functools.partial(_Handler, directory=str(root), broken=broken)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, broken=False, **kwargs):
        self.broken = broken
        super().__init__(*args, **kwargs)

    def do_GET(self):
        if self.broken:
            self.send_error(500, "mirror is down")
        else:
            super().do_GET()

    def log_message(self, *args):
        pass


def test_download_from_a_good_mirror_verifies_and_stores(tmp_path, mnist_dir):
    with _Server(mnist_dir) as server:
        files = images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)
    assert files["train_images"] == tmp_path / "data" / "train-images-idx3-ubyte.gz"
    assert images.load_mnist(tmp_path / "data", download=False).train_images.shape == (60000, 784)


def test_a_corrupted_file_is_rejected_and_the_next_mirror_is_used(tmp_path, mnist_dir):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(mnist_dir, corrupt)
    data = bytearray(gzip.decompress((corrupt / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    data[100] = (data[100] + 1) % 10  # one wrong label: valid IDX, wrong checksum
    (corrupt / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(data)))
    with _Server(corrupt) as bad:
        with pytest.raises(DataError, match="SHA-256"):
            images.locate(tmp_path / "only-bad", mirrors=(bad.url,), timeout=10)
        assert not (tmp_path / "only-bad" / "t10k-labels-idx1-ubyte.gz").exists()
        with _Server(mnist_dir) as good:
            images.locate(tmp_path / "fallback", mirrors=(bad.url, good.url), timeout=10)
    restored = gzip.decompress((tmp_path / "fallback" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert restored == gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())


def test_a_failing_server_gives_a_clear_error(tmp_path, mnist_dir):
    with _Server(mnist_dir, broken=True) as server:
        with pytest.raises(DataError) as info:
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)
    message = str(info.value)
    assert "download failed" in message and "500" in message and "--data-dir" in message


def test_a_wrong_file_already_in_the_download_directory_is_refused_and_kept(tmp_path, mnist_dir):
    target = tmp_path / "data"
    target.mkdir()
    stray = target / "train-labels-idx1-ubyte.gz"
    stray.write_bytes((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())  # the wrong labels
    with _Server(mnist_dir) as server:
        with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz is not the canonical") as info:
            images.locate(target, mirrors=(server.url,), timeout=10)
    assert "move it away" in str(info.value)
    assert stray.read_bytes() == (mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()


def test_a_download_that_cannot_be_written_is_a_data_error(tmp_path, mnist_dir, monkeypatch):
    import contextlib
    import errno

    @contextlib.contextmanager
    def full_disk(path):
        raise OSError(errno.ENOSPC, "No space left on device")
        yield

    monkeypatch.setattr(images, "atomic_path", full_disk)
    with _Server(mnist_dir) as server:
        with pytest.raises(DataError, match="cannot write .*No space left on device"):
            images.locate(tmp_path / "data", mirrors=(server.url,), timeout=10)
