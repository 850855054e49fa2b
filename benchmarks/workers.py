"""One process on all threads against one-thread processes side by side (`--workers`).

    python benchmarks/workers.py --data-dir ../shared/data/mnist [--threads 2] [--compile]

Two pieces of `reproduce mnist`'s work, each timed once in one process with `--threads`
torch threads, then in `--threads` processes of one thread each running at once:
- the learned optimizer's step (the shipped `mnist`) on the parameters of 100 MNIST MLPs of
  15,910 parameters each (a test run's step), nanoseconds per coordinate, best of 5;
- a baseline's test run: Adam on 100 MLP instances for 100 steps, seconds.
Work per second of the side-by-side processes against the single process is what `--workers`
can gain on this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402


def learned_step_ns(compile: bool) -> float:
    from optimizer3.optim.learned import LearnedOptimizer

    params = torch.zeros(100, 15910, requires_grad=True)
    optimizer = LearnedOptimizer.from_pretrained("mnist", [params], compile=compile)
    params.grad = torch.randn(100, 15910, generator=torch.Generator().manual_seed(0)) * 1e-3
    for _ in range(3):
        optimizer.step()
    times = []
    for _ in range(5):
        began = time.perf_counter()
        optimizer.step()
        times.append(time.perf_counter() - began)
    return min(times) / params.numel() * 1e9


def baseline_run_s(data_dir: str | None) -> float:
    from optimizer3.tasks import TaskConfig, make_task_family
    from optimizer3.trajectories import run_baseline

    task = make_task_family(TaskConfig(name="mnist"), "heldout", data_dir).sample(100, torch.Generator())
    run_baseline("adam", 0.01, task, 5, seed=0)
    began = time.perf_counter()
    run_baseline("adam", 0.01, task, 100, seed=0)
    return time.perf_counter() - began


def measure(threads: int, compile: bool, data_dir: str | None, start, results) -> None:
    """In a process: wait until every process is ready, then time both pieces."""
    torch.set_num_threads(threads)
    start.wait()
    results.put({"learned_ns_per_coordinate": learned_step_ns(compile), "adam_run_s": baseline_run_s(data_dir)})


def run(processes: int, threads: int, compile: bool, data_dir: str | None) -> list[dict[str, float]]:
    """`processes` processes of `threads` threads each, started together."""
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=measure, args=(threads, compile, data_dir, start, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    measured = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    one = run(1, args.threads, args.compile, args.data_dir)[0]
    many = run(args.threads, 1, args.compile, args.data_dir)
    print(json.dumps({"one_process": one, "side_by_side": many}, indent=1))
    for key in one:
        mean = sum(result[key] for result in many) / len(many)
        print(f"{key}: one process of {args.threads} threads {one[key]:.3g}; each of {args.threads} "
              f"one-thread processes at once {mean:.3g}; work per second side by side / one process "
              f"{args.threads * one[key] / mean:.2f}")


if __name__ == "__main__":
    main()
