import functools
import http.server
import subprocess
import sys
import threading

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # Fixed thread count: results are bit-identical only for the same count, and tests on a
    # 2-core machine run faster without oversubscription.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


SHARED_MNIST = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """The real MNIST files that the workplace shares beside the repository."""
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST}")
    return SHARED_MNIST


SHARED_FASHION = SHARED_MNIST.parent / "fashion-mnist"


@pytest.fixture(scope="session")
def fashion_dir():
    """The real Fashion-MNIST files that the workplace shares beside the repository."""
    if not (SHARED_FASHION / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real Fashion-MNIST not found at {SHARED_FASHION}")
    return SHARED_FASHION


class LoopbackServer:
    """Serves a directory on 127.0.0.1; `broken` answers every request with HTTP 500."""

    def __init__(self, root, broken=False):
        handler = functools.partial(_LoopbackHandler, directory=str(root), broken=broken)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _LoopbackHandler(http.server.SimpleHTTPRequestHandler):
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


@pytest.fixture
def loopback():
    """`LoopbackServer`: `with loopback(folder) as server:` serves `folder` at `server.url`, so that
    download tests never touch the network."""
    return LoopbackServer


# The command line in a process that sends itself signal SIG during meta-training trajectory AT
# (after that trajectory's work, before its record and checkpoint): a stop at a point fixed in
# advance, where a signal from outside would race the run.
_SELF_SIGNAL = """
import os, sys
from optimizer3.meta import trainer
advance = trainer._advance
def advance_then_signal(config, runtime, state, *rest):
    record = advance(config, runtime, state, *rest)
    if state.trajectory == {at}:
        os.kill(os.getpid(), {sig})
    return record
trainer._advance = advance_then_signal
sys.argv[0] = "optimizer3"
from optimizer3.cli import run
run()
"""


def run_stopping_at(sig, at, *argv):
    """`optimizer3 ARGV...` in a subprocess that receives `sig` during trajectory `at`."""
    script = _SELF_SIGNAL.format(at=at, sig=int(sig))
    return subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=300)


def assert_rows_and_copies_match(task):
    """A batched task computes each instance's loss as that instance alone would (`rows`), and
    several copies' losses and gradients (`copies_loss`) as each copy alone would."""
    g = torch.Generator().manual_seed(2)
    start, batch = task.init(g), task.sample_batch(g)
    losses = task.loss(start, batch)
    for i in range(task.num_problems):
        torch.testing.assert_close(task.rows(i, i + 1).loss(start[i : i + 1], batch[i : i + 1]), losses[i : i + 1],
                                   rtol=1e-5, atol=1e-5)
    copies = [(start + 0.1 * c * torch.randn(start.shape, generator=g)).requires_grad_() for c in range(3)]
    together = task.copies_loss(copies, batch)
    assert together.shape == (3, task.num_problems)
    grads = torch.autograd.grad(together.sum(), copies)
    for params, copy_losses, grad in zip(copies, together, grads):
        alone = task.loss(params, batch)
        torch.testing.assert_close(copy_losses, alone)
        torch.testing.assert_close(grad, torch.autograd.grad(alone.sum(), params)[0])
    assert not torch.allclose(together[0], together[1])
