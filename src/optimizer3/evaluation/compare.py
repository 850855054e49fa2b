"""Run every optimizer on the same held-out problems and summarise the losses it reaches.

A comparison is one part per optimizer: the learned optimizer's test runs, and each baseline's
learning-rate tuning and test runs. Every part draws its problems and minibatches from its own
seeded generators, so the parts are independent: they run one after another, or side by side in
`runtime.workers` processes, with the same results. Computation only: plots live in `plotting`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from optimizer3.evaluation.config import EvaluationConfig
from optimizer3.evaluation.runs import Learned, Run, run_baseline, run_learned
from optimizer3.evaluation.statistics import bootstrap_mean_interval, mean_curve, summarize
from optimizer3.evaluation.tuning import TuningResult, tune_learning_rates
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import Task, TaskConfig, TaskFamily, make_task_family

LEARNED = "lstm"  # the learned optimizer's name in every table


@dataclasses.dataclass
class Comparison:
    """Everything measured in one comparison on the test problems.

    `prefix_of`: where this comparison's runs were the first `steps` steps of a longer
    comparison's runs, that one's number of steps; its `seconds` then count only the runs made
    for this one alone.
    """

    steps: int
    learning_rates: dict[str, float]
    tuning: dict[str, dict[str, list[float]]]
    summaries: dict[str, dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    prefix_of: int | None = None

    def ratios(self, learned: str = LEARNED) -> dict[str, float]:
        """The learned optimizer's mean and geometric-mean final loss over the best baseline's."""
        baselines = [name for name in self.summaries if name != learned]
        best_mean = min(self.summaries[name]["mean"] for name in baselines)
        best_geo = min(self.summaries[name]["geometric_mean"] for name in baselines)
        return {
            "mean_vs_best_baseline": self.summaries[learned]["mean"] / best_mean,
            "geometric_mean_vs_best_baseline": self.summaries[learned]["geometric_mean"] / best_geo,
        }


@dataclasses.dataclass
class Part:
    """One optimizer's share of a comparison: its test runs and, for a baseline, its tuning,
    for each horizon; and the seconds that each horizon's own runs took."""

    runs: dict[int, Run]
    tuning: dict[int, TuningResult]
    seconds: dict[int, dict[str, float]]


def compare(
    learned: Learned | None,
    task: TaskConfig | TaskFamily,
    evaluation: EvaluationConfig,
    horizons: tuple[int, ...],
    tuning_seed: int,
    runtime: RuntimeConfig = RuntimeConfig(),
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> dict[int, Comparison]:
    """Tune every baseline on validation problems, then run all optimizers on the test problems.

    `task`: a task config, whose held-out split supplies the problems, or a task family.
    Every optimizer starts from the same initial parameters of the same test problems and sees
    the same minibatches, because each run draws them from a generator seeded with
    `evaluation.test_seed`; the tuning problems come from `tuning_seed` (the validation problems
    of the learned optimizer's meta-training). For several `horizons`, a shorter one reads the
    first steps of the longest one's runs (`Run.first`), the same numbers as runs of its own.
    Returns the comparison for each horizon.
    """
    return compare_tasks(learned, [(task, horizons)], evaluation, tuning_seed, runtime, data_dir, progress)[0]


def compare_tasks(
    learned: Learned | None,
    tasks: list[tuple[TaskConfig | TaskFamily, tuple[int, ...]]],
    evaluation: EvaluationConfig,
    tuning_seed: int,
    runtime: RuntimeConfig = RuntimeConfig(),
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> list[dict[int, Comparison]]:
    """`compare` for every (task, horizons) of `tasks`, each optimizer of each task one job."""
    tasks = [(task, tuple(sorted(set(horizons)))) for task, horizons in tasks]
    names = (LEARNED,) * (learned is not None) + tuple(evaluation.baselines)
    jobs = [(index, name) for index in range(len(tasks)) for name in names]
    run = functools.partial(_run_job, learned=learned, evaluation=evaluation, tuning_seed=tuning_seed,
                            runtime=runtime, data_dir=data_dir)
    calls = {(index, name): functools.partial(run, name, *tasks[index]) for index, name in jobs}
    with tqdm(total=len(jobs), desc="evaluate", unit="optimizer", disable=not progress) as bar:
        def done(job: tuple[int, str], part: Part | None = None) -> None:
            bar.set_postfix_str(f"{job[1]} on task {job[0] + 1} of {len(tasks)}" if len(tasks) > 1 else job[1])
            bar.update()
        if runtime.workers == 1:
            parts = {}
            for job, call in calls.items():
                parts[job] = call()
                done(job)
        else:
            parts = run_side_by_side(calls, _largest_first(jobs, tasks, data_dir, runtime), runtime.workers, done)
    results = []
    for index, (task, horizons) in enumerate(tasks):
        test_task, _ = sample_tasks(_family(task, data_dir, runtime.device), evaluation, tuning_seed)
        results.append(assemble({name: parts[index, name] for name in names}, test_task, horizons,
                                evaluation.bootstrap, evaluation.test_seed))
    return results


def sample_tasks(family: TaskFamily, evaluation: EvaluationConfig, tuning_seed: int) -> tuple[Task, Task]:
    """The test problems and the validation problems that tune the baselines."""
    return (family.sample(evaluation.test_problems, torch.Generator().manual_seed(evaluation.test_seed)),
            family.sample(evaluation.tuning_problems, torch.Generator().manual_seed(tuning_seed)))


@functools.cache
def _family(task: TaskConfig | TaskFamily, data_dir, device: str) -> TaskFamily:
    """The held-out family of a task config, made once per process; a family as it is."""
    return make_task_family(task, "heldout", data_dir, device) if isinstance(task, TaskConfig) else task


def _run_job(
    name: str, task: TaskConfig | TaskFamily, horizons: tuple[int, ...], *, learned: Learned | None,
    evaluation: EvaluationConfig, tuning_seed: int, runtime: RuntimeConfig, data_dir,
) -> Part:
    """One optimizer's part of the comparison on `task` (in this process or a worker)."""
    test_task, tuning_task = sample_tasks(_family(task, data_dir, runtime.device), evaluation, tuning_seed)
    longest = max(horizons)
    clocks = {steps: _Clock() for steps in horizons}
    if name == LEARNED:
        run = clocks[longest](name, lambda: run_learned(learned, test_task, longest, evaluation.test_seed,
                                                        runtime.compile, horizons))
        return Part({steps: run.first(steps) for steps in horizons}, {},
                    {steps: clock.seconds for steps, clock in clocks.items()})
    tuning = clocks[longest](f"tune_{name}", lambda: tune_learning_rates(
        name, tuning_task, horizons, tuning_seed, evaluation.grid))
    runs = {}
    for lr in sorted({result.best_lr for result in tuning.values()}):
        served = [steps for steps in horizons if tuning[steps].best_lr == lr]
        run = clocks[served[-1]](name, lambda: run_baseline(name, lr, test_task, served[-1], evaluation.test_seed, served))
        runs.update({steps: run.first(steps) for steps in served})
    return Part(runs, tuning, {steps: clock.seconds for steps, clock in clocks.items()})


def _largest_first(jobs, tasks, data_dir, runtime: RuntimeConfig) -> list[tuple[int, str]]:
    """The jobs ordered so that the longest start first: the learned optimizer's runs cost
    most, then by steps times parameters."""
    dims = [_family(task, data_dir, runtime.device).sample(1, torch.Generator()).dim for task, _ in tasks]
    return sorted(jobs, key=lambda job: (job[1] == LEARNED, max(tasks[job[0]][1]) * dims[job[0]]), reverse=True)


def run_side_by_side(calls: dict, order: list, workers: int, done: Callable) -> dict:
    """Every call in `workers` processes, each with an equal share of this one's threads (at
    least one), reporting each part as it finishes."""
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads,
                                                initargs=(threads,)) as pool:
        futures = {pool.submit(calls[job]): job for job in order}
        parts = {}
        try:
            for future in concurrent.futures.as_completed(futures):
                parts[futures[future]] = future.result()
                done(futures[future], parts[futures[future]])
        except BaseException:
            # Keep what the other workers finish meanwhile (done() stores each part), then raise.
            pool.shutdown(wait=True, cancel_futures=True)
            for future, job in futures.items():
                if job not in parts and future.done() and not future.cancelled() and future.exception() is None:
                    parts[job] = future.result()
                    done(job, parts[job])
            raise
    return parts


def assemble(
    parts: dict[str, Part], test_task: Task, horizons: tuple[int, ...], bootstrap: int, test_seed: int
) -> dict[int, Comparison]:
    """The comparison for each horizon from every optimizer's part."""
    longest = max(horizons)
    comparisons = {}
    for steps in horizons:
        tuned = {name: part.tuning[steps] for name, part in parts.items() if part.tuning}
        runs = {name: part.runs[steps] for name, part in parts.items()}
        comparisons[steps] = _summarise(
            runs, test_task, steps, {name: result.best_lr for name, result in tuned.items()},
            {name: {"lrs": list(result.lrs), "scores": list(result.scores)} for name, result in tuned.items()},
            bootstrap, test_seed, {k: v for part in parts.values() for k, v in part.seconds[steps].items()},
            None if steps == longest else longest,
        )
    return comparisons


def _summarise(
    runs: dict[str, Run], test_task: Any, steps: int, learning_rates: dict[str, float], tuning: dict[str, Any],
    bootstrap: int, test_seed: int, seconds: dict[str, float], prefix_of: int | None,
) -> Comparison:
    """Statistics, curves and (for tasks with a test set) test accuracies of finished runs."""
    losses = {name: run.losses.double().numpy() for name, run in runs.items()}
    summaries = {name: summarize(run[-1], bootstrap, test_seed) for name, run in losses.items()}
    if hasattr(test_task, "test_accuracy"):  # tasks with a test set: the optimizee's accuracy
        for name, run in runs.items():
            accuracy = test_task.test_accuracy(run.params).double().cpu().numpy()
            summaries[name]["test_accuracy"] = float(accuracy.mean())
            summaries[name]["test_accuracy_ci"] = bootstrap_mean_interval(accuracy, bootstrap, test_seed)
    curves = {name: mean_curve(run, min(bootstrap, 500), test_seed) for name, run in losses.items()}
    return Comparison(steps, learning_rates, tuning, summaries, curves, seconds, prefix_of)


class _Clock:
    """Runs labelled calls and records how long each took."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def __call__(self, label: str, call):
        began = time.perf_counter()
        try:
            return call()
        finally:
            self.seconds[label] = time.perf_counter() - began
