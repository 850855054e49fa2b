"""Comparisons whose optimizers run side by side in worker processes.

A comparison (`evaluate.compare_horizons`) is one part per optimizer: the learned optimizer's
test runs, and each baseline's tuning and test runs. The parts are independent, so with
`workers` > 1 they run in that many processes (each with its share of torch's threads), largest
first, and the main process assembles the tables. Every part computes exactly what it computes
in one process, so the results are the same; on a 2-core CPU two one-thread workers did about
1.3 times the work of one two-thread process (BENCHMARKS.md, "Wall time of reproduce mnist").
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os

import torch

from optimizer3.config import EvaluationConfig
from optimizer3.evaluate import Comparison, Part, assemble, compare_horizons, run_part, sample_tasks
from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams
from optimizer3.tasks import TaskConfig, make_task_family

Learned = tuple[MetaParams, LSTMOptimizerConfig] | None


def compare_tasks(
    learned: Learned,
    tasks: list[tuple[TaskConfig, tuple[int, ...]]],
    evaluation: EvaluationConfig,
    tuning_seed: int,
    data_dir: str | os.PathLike[str] | None,
    on_start=lambda task, horizons: None,
) -> list[dict[int, Comparison]]:
    """`compare_horizons` for every (task, horizons) of `tasks`, in `evaluation.workers` processes.

    `on_start(task, horizons)` is called as each task's work begins (with one worker) or, with
    several, once for every task before any begins.
    """
    tasks = [(task, tuple(sorted(set(horizons)))) for task, horizons in tasks]
    families = [make_task_family(task, "heldout", data_dir, evaluation.device) for task, _ in tasks]
    if evaluation.workers == 1:
        results = []
        for family, (task, horizons) in zip(families, tasks):
            on_start(task, horizons)
            results.append(compare_horizons(
                learned, family, evaluation.baselines, horizons, evaluation.test_problems, evaluation.test_seed,
                evaluation.tuning_problems, tuning_seed, evaluation.grid, evaluation.bootstrap, evaluation.compile,
            ))
        return results
    for task, horizons in tasks:
        on_start(task, horizons)
    names = ("lstm",) * (learned is not None) + tuple(evaluation.baselines)
    jobs = [(index, name) for index in range(len(tasks)) for name in names]
    # Largest first: the learned optimizer's runs cost most, then by steps times parameters.
    dims = [family.sample(1, torch.Generator()).dim for family in families]
    jobs.sort(key=lambda job: (job[1] == "lstm", max(tasks[job[0]][1]) * dims[job[0]]), reverse=True)
    threads = max(1, torch.get_num_threads() // evaluation.workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with concurrent.futures.ProcessPoolExecutor(
        evaluation.workers, mp_context=context, initializer=torch.set_num_threads, initargs=(threads,)
    ) as pool:
        futures = {
            (index, name): pool.submit(_run_job, name, learned if name == "lstm" else None, tasks[index][0],
                                       tasks[index][1], evaluation, tuning_seed, data_dir)
            for index, name in jobs
        }
        parts = {job: future.result() for job, future in futures.items()}
    results = []
    for index, (family, (task, horizons)) in enumerate(zip(families, tasks)):
        test_task, _ = sample_tasks(family, evaluation.test_problems, evaluation.test_seed,
                                    evaluation.tuning_problems, tuning_seed)
        results.append(assemble({name: parts[index, name] for name in names}, test_task, horizons,
                                evaluation.bootstrap, evaluation.test_seed))
    return results


def _run_job(
    name: str,
    learned: Learned,
    task: TaskConfig,
    horizons: tuple[int, ...],
    evaluation: EvaluationConfig,
    tuning_seed: int,
    data_dir: str | os.PathLike[str] | None,
) -> Part:
    """In a worker: one optimizer's part of the comparison on `task`."""
    family = _family(task, data_dir, evaluation.device)
    test_task, tuning_task = sample_tasks(family, evaluation.test_problems, evaluation.test_seed,
                                          evaluation.tuning_problems, tuning_seed)
    return run_part(name, learned, test_task, tuning_task, horizons, evaluation.test_seed, tuning_seed,
                    evaluation.grid, evaluation.compile)


@functools.cache
def _family(task: TaskConfig, data_dir, device: str):
    return make_task_family(task, "heldout", data_dir, device)
