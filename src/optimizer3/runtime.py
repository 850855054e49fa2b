"""How a command computes, as opposed to what it computes: device, threads, processes,
compilation, the precision of the learned optimizer's matrix products, and memory.

These settings never change a run's problems, minibatches or meta-parameters' meaning; they are
given anew by every command (a resumed run takes its experiment from its checkpoint and these
from the command line) and recorded in run.json, not in the experiment's config.

Random draws (initial parameters, minibatches, problems) are always made by CPU generators and
then moved, so a run sees the same problems and minibatches on every device; only the
arithmetic, and with it the rounding, differs.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import torch

from optimizer3.configs import check_choice, field
from optimizer3.errors import UsageError

DEVICE_TYPES = ("cpu", "cuda")
MATMUL_DTYPES = ("float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where and how a command computes."""

    device: str = field(
        "cpu", "where the optimizees and the learned optimizer compute: cpu, cuda or cuda:N (random "
        "draws stay on the CPU, so every device sees the same problems and minibatches)")
    threads: int = field(
        0, "torch CPU threads; 0: half this machine's cores, at least one, which keeps a run on a "
        "machine shared with one other busy process within about 2x of its time alone (BENCHMARKS.md, "
        "'Threads'); results are bit-identical only for the same thread count")
    workers: int = field(
        1, "processes on this machine that share the work, each with an equal share of the threads: "
        "meta-training splits every trajectory's problems between them and averages the "
        "meta-gradient (torch.distributed; the same problems, meta-gradients equal to rounding), an "
        "evaluation runs its optimizers side by side (the same results)")
    compile: bool = field(
        False, "apply the learned optimizer's step through torch.compile: faster on large models "
        "after a compile of seconds to a minute; needs a C++ compiler; results equal to rounding")
    matmul_dtype: str = field(
        "float32", "meta-training: the dtype of the LSTM's matrix products in unrolls; bfloat16 is "
        "faster on CPUs with AVX512-BF16 and slower on others; the LSTM's state, its element-wise "
        "work, validation and the trained optimizer stay float32", choices=MATMUL_DTYPES)
    recompute_every: int = field(
        0, "meta-training: keep the meta-graph of only this many optimizee steps at a time, running "
        "each truncation once without a graph and then segment by segment with one: the same "
        "meta-gradient to rounding, less memory, more time; 0 keeps each truncation's whole graph")

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.threads < 0:
            raise UsageError(f"Invalid threads: {self.threads}; use 0 (chosen by the machine) or more")
        if self.workers < 1:
            raise UsageError(f"Invalid workers: {self.workers}; use a positive integer")
        check_choice("matmul_dtype", self.matmul_dtype, MATMUL_DTYPES)
        if self.recompute_every < 0:
            raise UsageError(f"Invalid recompute_every: {self.recompute_every}; use 0 (off) or a positive number of steps")


def check_device_name(name: str) -> None:
    """Refuse a name that is no device of a supported type (whether this machine has it or not)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise UsageError(f"Invalid device: {name!r}; use cpu, cuda or cuda:N")


def device_from_name(name: str) -> torch.device:
    """The device `name` names, refused with a one-line error when this machine lacks it."""
    check_device_name(name)
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"Invalid device: {name!r}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"Invalid device: {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return device


def check_compiler() -> None:
    """torch.compile's CPU backend builds C++; say so in one line instead of a late traceback."""
    wanted = os.environ.get("CXX")
    found = shutil.which(wanted) if wanted else any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    if not found:
        missing = f"$CXX ({wanted!r}) was not found" if wanted else "none of g++, c++, clang++ is installed"
        raise UsageError(
            f"--compile needs a C++ compiler (torch.compile's CPU backend), but {missing}; "
            "install one or drop --compile"
        )


def default_threads() -> int:
    """Torch CPU threads where none are asked for: half the cores this process may use, at
    least one.

    Torch's own default, every core, is the fastest alone but fragile when the machine is
    shared: on a 2-core machine beside one other busy torch process, two threads made the
    project's workloads 4 to 18 times slower than at their best alone, one thread 1.6 to 2.2
    times (`benchmarks/threads.py`; BENCHMARKS.md, "Threads"), because every parallel operation
    waits for its slowest thread, and a thread that has lost its core holds up all the others.
    Half the cores leaves room for one other process of the same kind.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def apply_threads(runtime: RuntimeConfig) -> None:
    """Set torch's CPU threads for this command: `runtime.threads`, or `default_threads()`."""
    torch.set_num_threads(runtime.threads or default_threads())
