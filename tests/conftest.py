import subprocess
import sys

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
