"""Data-parallel meta-training over processes (torch.distributed).

Every process holds the same meta-parameters and draws the same random numbers as a
single-process run would; it computes only its own rows of each trajectory's problems (a
`Shard`), and the meta-gradient, a mean over problems, is averaged over the processes, each
weighted by its share of the rows, before every meta-step. So a run with any number of processes
trains on the same problems and minibatches as the run in one process, and its meta-gradients
equal that run's to rounding. Validation is split the same way.

Processes come either from `meta_train`'s `runtime.workers` (processes on this machine that it
starts itself) or from a launcher such as `torchrun`, across machines (`init_from_environment`).
The reductions run on the CPU through the gloo backend whatever the device: they move a few
thousand numbers per meta-step.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import multiprocessing
import os
import pathlib
import queue
import sys
import tempfile
from typing import Any, NoReturn

import torch
import torch.distributed as dist

from optimizer3.errors import UsageError
from optimizer3.learned.lstm import MetaParams
from optimizer3.tasks.base import Task


# How long a collective waits for the other processes (a compile or a checkpoint in one of them).
TIMEOUT = datetime.timedelta(minutes=30)


def rows(problems: int, rank: int, size: int) -> tuple[int, int]:
    """The rows [start, stop) of `problems` that process `rank` of `size` computes: as equal as
    they can be, the first `problems % size` processes one more."""
    base, extra = divmod(problems, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


@dataclasses.dataclass(frozen=True)
class Shard:
    """Rows [start, stop) of `whole`'s problems as a task of their own.

    It draws everything that `whole` draws (initial parameters, minibatch indices, for all the
    problems) and keeps its own rows, so the generator moves exactly as in one process and every
    process's rows are those that one process would have drawn for them.
    """

    whole: Task
    part: Task
    start: int
    stop: int

    @property
    def num_problems(self) -> int:
        return self.stop - self.start

    @property
    def dim(self) -> int:
        return self.whole.dim

    def init(self, generator: torch.Generator) -> torch.Tensor:
        return self.whole.init(generator)[self.start : self.stop].clone()  # not a view that keeps the whole

    def sample_batch(self, generator: torch.Generator) -> Any:
        batch = self.whole.sample_batch(generator)
        return None if batch is None else batch[self.start : self.stop]

    def loss(self, params: torch.Tensor, batch: Any) -> torch.Tensor:
        return self.part.loss(params, batch)

    # What PES meta-training asks of a task beyond the `Task` protocol (`meta.pes`).
    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        return self.whole.parameter_shapes

    def copies_loss(self, params, batch: Any) -> torch.Tensor:
        if hasattr(self.part, "copies_loss"):
            return self.part.copies_loss(params, batch)
        return torch.stack([self.part.loss(copy, batch) for copy in params])

    def original_loss(self, losses: torch.Tensor) -> torch.Tensor:
        return self.part.original_loss(losses) if hasattr(self.part, "original_loss") else losses


@dataclasses.dataclass(frozen=True)
class Group:
    """This process's place among the processes that meta-train together (one: no group)."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        """The process that writes checkpoints and metrics and shows progress."""
        return self.rank == 0

    def shard(self, task: Task) -> Task:
        """This process's rows of `task` (the task itself in one process)."""
        if self.size == 1:
            return task
        start, stop = rows(task.num_problems, self.rank, self.size)
        return Shard(task, task.rows(start, stop), start, stop)

    def average_meta_gradient(self, meta_params: MetaParams, meta_loss: float, share: float) -> float:
        """Replace every meta-parameter's `.grad` (that of the mean loss over this process's
        rows) with the mean over all processes' rows, and return the meta-loss averaged the same
        way; `share`: this process's fraction of the rows. A non-finite value anywhere makes the
        result non-finite everywhere, so that every process skips the same meta-updates."""
        if self.size == 1:
            return meta_loss
        params = list(meta_params.values())
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        pieces = [g.detach().reshape(-1).double().cpu() * share for g in grads]
        # Then the meta-loss, and which meta-parameters had a gradient in any process (one that
        # had none anywhere keeps none, as in one process, so that Adam skips it).
        pieces += [torch.tensor([meta_loss * share], dtype=torch.float64),
                   torch.tensor([float(p.grad is not None) for p in params], dtype=torch.float64)]
        flat = torch.cat(pieces)
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g).to(g.dtype).to(g.device)
            offset += g.numel()
        for p, had in zip(params, flat[offset + 1 :].tolist()):
            if not had:
                p.grad = None
        return float(flat[offset])

    def average(self, value: float, share: float) -> float:
        """The mean over all processes' rows of a mean over this process's rows (`value`),
        weighted as `average_meta_gradient` weighs; `share`: this process's fraction of the rows."""
        if self.size == 1:
            return value
        total = torch.tensor([value * share], dtype=torch.float64)
        dist.all_reduce(total)
        return float(total)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `values` (a float64 CPU tensor) over all processes."""
        if self.size == 1:
            return values
        values = values.clone()
        dist.all_reduce(values)
        return values

    def same(self, value: float) -> bool:
        """Whether every process passed the same `value` (a checksum of where it starts)."""
        if self.size == 1:
            return True
        values = torch.tensor([value, -value], dtype=torch.float64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        return bool(values[0] == -values[1])

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set in any process (a stop request that reached one of them)."""
        if self.size == 1:
            return flag
        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value)


def current_group() -> Group:
    """This process's group: torch.distributed's if one is initialized, else one process."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def launched_size() -> int:
    """How many processes a launcher such as torchrun started for this run (1: none)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's number among a launcher's processes (0 without a launcher), known before
    the group is joined, so that process 0 can check and prepare its run directory first."""
    return int(os.environ.get("RANK", "0"))


def init_from_environment() -> Group:
    """Join the process group that a launcher (torchrun) describes in the environment
    (`MASTER_ADDR`, `MASTER_PORT`, `RANK`, `WORLD_SIZE`); one process without one."""
    if launched_size() == 1 or (dist.is_available() and dist.is_initialized()):
        return current_group()
    dist.init_process_group("gloo", init_method="env://", timeout=TIMEOUT)
    return current_group()


def leave_launched_run(status: int) -> NoReturn:
    """End a launcher's process with `status`, its work done: leave the process group that
    `init_from_environment` joined, then `exit_before_teardown`."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    exit_before_teardown(status)


def exit_before_teardown(status: int) -> NoReturn:
    """Exit with `status` after the interpreter's exit handlers (`atexit`: multiprocessing's
    finalizers, which remove its semaphores, and torch.compile's worker pools) but before its
    teardown of modules and C++ objects. There a process that ran in a torch.distributed group
    sometimes aborts after a finished run (SIGABRT, "terminate called without an active
    exception", no Python frame: a thread of torch's runtime still running when its C++ object
    is destroyed), and whoever waits for it (torchrun, `run_workers`) sees a failure or prints
    that message."""
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def run_workers(worker, args: tuple, size: int, main) -> Any:
    """Run `main()` here as process 0 of `size` and `worker(*args)` in `size - 1` new processes
    on this machine, all in one process group; `main`'s result.

    Each process gets an equal share of this one's torch threads. A worker that fails before it
    joins the group is an error here at once; one that fails later ends the others' collectives
    with an error, and this function raises.
    """
    threads = torch.get_num_threads()
    share = max(1, threads // size)
    with tempfile.TemporaryDirectory(prefix="optimizer3-group-") as folder:
        init_method = pathlib.Path(folder, "rendezvous").as_uri()
        context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
        ready = context.Queue()
        # Not daemons: torch.compile starts processes of its own in each worker.
        processes = [context.Process(target=_worker_main,
                                     args=(worker, rank, size, init_method, share, args, ready))
                     for rank in range(1, size)]
        for process in processes:
            process.start()
        torch.set_num_threads(share)
        try:
            _wait_until_ready(processes, ready)
            dist.init_process_group("gloo", init_method=init_method, rank=0, world_size=size,
                                    timeout=TIMEOUT)
            try:
                result = main()
            finally:
                dist.destroy_process_group()
        finally:
            torch.set_num_threads(threads)
            for process in processes:  # they end with this process's run, or soon after its error
                process.join(timeout=60)
                if process.is_alive():
                    process.terminate()
                    process.join()
    # A worker that exited with an error (not one ended above, after this process's run) failed.
    failed = [f"{process.name} (exit {process.exitcode})" for process in processes if process.exitcode > 0]
    if failed:
        raise RuntimeError(f"meta-training worker processes failed: {', '.join(failed)}")
    return result


def _wait_until_ready(processes: list, ready) -> None:
    """Wait until every worker has started, failing at once if one exits first (a script that
    starts workers without an `if __name__ == "__main__":` guard, say)."""
    waiting = len(processes)
    while waiting:
        try:
            ready.get(timeout=0.5)
            waiting -= 1
        except queue.Empty:
            dead = [f"{p.name} (exit {p.exitcode})" for p in processes if p.exitcode is not None]
            if dead:
                raise RuntimeError(f"meta-training worker processes exited before joining the run: "
                                   f"{', '.join(dead)}; see their errors above")


def _worker_main(worker, rank: int, size: int, init_method: str, threads: int, args: tuple, ready) -> None:
    torch.set_num_threads(threads)
    ready.put(rank)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=size,
                            timeout=TIMEOUT)
    try:
        worker(*args)
    finally:
        dist.destroy_process_group()
    exit_before_teardown(0)  # a worker that raised exits as Python does, with its traceback


def check_size(size: int, problems: int, validation_problems: int) -> None:
    """Refuse more processes than a trajectory's problems or the validation problems: every
    process needs at least one of each."""
    if size > min(problems, validation_problems):
        raise UsageError(
            f"Invalid workers: {size} processes for {problems} problems per trajectory and "
            f"{validation_problems} validation problems; use at most one process per problem of each"
        )


def check_workers(workers: int) -> None:
    """Refuse local worker processes inside a launcher's group: the launcher's processes are the
    workers."""
    if workers > 1 and launched_size() > 1:
        raise UsageError(
            f"Invalid --workers {workers} under a launcher of {launched_size()} processes (torchrun): "
            "its processes are the workers; drop --workers"
        )
