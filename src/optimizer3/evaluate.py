"""Run every optimizer on the same problems and summarise the losses it reaches.

Computation only: arrays in, arrays and numbers out. Plots live in `plotting`.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams
from optimizer3.optim.tuning import LearningRateGrid, TuningResult, tune_learning_rates
from optimizer3.tasks.base import Task, TaskFamily
from optimizer3.trajectories import Run, run_baseline, run_learned


def finite_or_inf(losses: np.ndarray) -> np.ndarray:
    """Losses as float64 with every diverged (NaN or infinite) value set to +inf."""
    losses = np.asarray(losses, dtype=np.float64)
    return np.where(np.isfinite(losses), losses, np.inf)


def safe_log10(losses: np.ndarray) -> np.ndarray:
    """log10 of losses, with exact zeros clamped to the smallest positive float64."""
    return np.log10(np.maximum(finite_or_inf(losses), np.finfo(np.float64).tiny))


def _statistics(values: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore"):
        return {
            "mean": values.mean(axis=axis),
            "median": np.median(values, axis=axis),
            "mean_log10": safe_log10(values).mean(axis=axis),
        }


def interval95(samples: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 2.5th and 97.5th percentiles of bootstrap `samples` (finite or +inf) along `axis`.

    numpy interpolates between neighbouring order statistics and gives NaN where one of them is
    infinite; the interval's bound is then infinite too, unless it falls exactly on the finite
    neighbour.
    """
    samples = np.asarray(samples, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        linear = np.percentile(samples, [2.5, 97.5], axis=axis)
    if not np.isnan(linear).any():  # nothing diverged near the bounds
        return linear[0], linear[1]
    lower = np.percentile(samples, [2.5, 97.5], axis=axis, method="lower")
    count = samples.size if axis is None else samples.shape[axis]
    exact = np.array([(q / 100 * (count - 1)) % 1 == 0 for q in (2.5, 97.5)])
    exact = exact.reshape((2,) + (1,) * (linear.ndim - 1))
    bounds = np.where(np.isnan(linear), np.where(exact, lower, np.inf), linear)
    return bounds[0], bounds[1]


def summarize(final_losses: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    """Mean, median and mean log10 of final losses, each with a 95% bootstrap interval.

    Every statistic is computed on the same `samples` resamples (percentile bootstrap).
    """
    values = finite_or_inf(final_losses)
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, len(values), size=(samples, len(values)))]
    point, boot = _statistics(values, axis=0), _statistics(resampled, axis=1)
    summary: dict[str, float] = {}
    for name in point:
        summary[name] = float(point[name])
        low, high = interval95(boot[name])
        summary[f"{name}_ci"] = [float(low), float(high)]
    summary["geometric_mean"] = float(10.0 ** point["mean_log10"])
    summary["diverged"] = int((~np.isfinite(values)).sum())
    return summary


def bootstrap_mean_interval(values: np.ndarray, samples: int, seed: int) -> list[float]:
    """95% percentile bootstrap interval of the mean of `values`."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    return [float(v) for v in interval95(means)]


def mean_curve(losses: np.ndarray, samples: int, seed: int, chunk: int = 100) -> dict[str, list[float]]:
    """Mean loss at every step with a 95% bootstrap band, for plotting.

    Args:
      losses: shape [steps + 1, problems].
    """
    values = finite_or_inf(losses)
    rng = np.random.default_rng(seed)
    problems = values.shape[1]
    means = []
    for begin in range(0, samples, chunk):  # chunks bound the memory of the resamples
        index = rng.integers(0, problems, size=(min(chunk, samples - begin), problems))
        means.append(values[:, index].mean(axis=2))
    boot = np.concatenate(means, axis=1)
    low, high = interval95(boot, axis=1)
    return {"mean": values.mean(axis=1).tolist(), "low": low.tolist(), "high": high.tolist()}


@dataclasses.dataclass
class Comparison:
    """Everything measured in one comparison on the test problems.

    `prefix_of`: where this comparison's runs were the first `steps` steps of a longer
    comparison's runs (`compare_horizons`), that one's number of steps; its `seconds` then count
    only the runs made for this one alone.
    """

    steps: int
    learning_rates: dict[str, float]
    tuning: dict[str, dict[str, list[float]]]
    summaries: dict[str, dict[str, Any]]
    curves: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    prefix_of: int | None = None

    def ratios(self, learned: str = "lstm") -> dict[str, float]:
        """The learned optimizer's mean and geometric-mean final loss over the best baseline's."""
        baselines = [name for name in self.summaries if name != learned]
        best_mean = min(self.summaries[name]["mean"] for name in baselines)
        best_geo = min(self.summaries[name]["geometric_mean"] for name in baselines)
        return {
            "mean_vs_best_baseline": self.summaries[learned]["mean"] / best_mean,
            "geometric_mean_vs_best_baseline": self.summaries[learned]["geometric_mean"] / best_geo,
        }


def compare(
    learned: tuple[MetaParams, LSTMOptimizerConfig] | None,
    family: TaskFamily,
    baselines: tuple[str, ...],
    steps: int,
    test_problems: int,
    test_seed: int,
    tuning_problems: int,
    tuning_seed: int,
    grid: LearningRateGrid,
    bootstrap: int,
    compile: bool = False,
) -> Comparison:
    """Tune every baseline on validation problems, then run all optimizers on the test problems.

    Every optimizer starts from the same initial parameters of the same test problems and sees
    the same minibatches, because each run draws them from a generator seeded with `test_seed`.
    """
    return compare_horizons(learned, family, baselines, (steps,), test_problems, test_seed,
                            tuning_problems, tuning_seed, grid, bootstrap, compile)[steps]


def compare_horizons(
    learned: tuple[MetaParams, LSTMOptimizerConfig] | None,
    family: TaskFamily,
    baselines: tuple[str, ...],
    horizons: tuple[int, ...],
    test_problems: int,
    test_seed: int,
    tuning_problems: int,
    tuning_seed: int,
    grid: LearningRateGrid,
    bootstrap: int,
    compile: bool = False,
) -> dict[int, Comparison]:
    """`compare` for each number of steps in `horizons`, on the same problems, from shared runs.

    A run's first steps do not depend on how long it goes on, so the comparison for a shorter
    horizon reads the first steps of the longest one's runs (`Run.first`): the learned
    optimizer runs once, every baseline's tuning runs once per learning rate, and a test run
    serves every horizon whose tuned learning rate it has. The results equal separate
    `compare` calls.
    """
    horizons = tuple(sorted(set(horizons)))
    test_task, tuning_task = sample_tasks(family, test_problems, test_seed, tuning_problems, tuning_seed)
    names = ("lstm",) * (learned is not None) + tuple(baselines)
    parts = {name: run_part(name, learned, test_task, tuning_task, horizons, test_seed, tuning_seed, grid, compile)
             for name in names}
    return assemble(parts, test_task, horizons, bootstrap, test_seed)


def sample_tasks(
    family: TaskFamily, test_problems: int, test_seed: int, tuning_problems: int, tuning_seed: int
) -> tuple[Task, Task]:
    """The test problems and the validation problems that tune the baselines."""
    return (family.sample(test_problems, torch.Generator().manual_seed(test_seed)),
            family.sample(tuning_problems, torch.Generator().manual_seed(tuning_seed)))


@dataclasses.dataclass
class Part:
    """One optimizer's share of a comparison: its test runs and, for a baseline, its tuning,
    for each horizon; and the seconds that each horizon's own runs took."""

    runs: dict[int, Run]
    tuning: dict[int, TuningResult]
    seconds: dict[int, dict[str, float]]


def run_part(
    name: str,
    learned: tuple[MetaParams, LSTMOptimizerConfig] | None,
    test_task: Task,
    tuning_task: Task,
    horizons: tuple[int, ...],
    test_seed: int,
    tuning_seed: int,
    grid: LearningRateGrid,
    compile: bool = False,
) -> Part:
    """The runs of optimizer `name` ("lstm", the learned one, or a baseline) for `compare_horizons`."""
    longest = max(horizons)
    clocks = {steps: _Clock() for steps in horizons}
    if name == "lstm":
        run = clocks[longest]("lstm", lambda: run_learned(*learned, test_task, longest, test_seed, compile, horizons))
        return Part({steps: run.first(steps) for steps in horizons}, {},
                    {steps: clock.seconds for steps, clock in clocks.items()})
    tuning = clocks[longest](f"tune_{name}", lambda: tune_learning_rates(name, tuning_task, horizons, tuning_seed, grid))
    runs = {}
    for lr in sorted({result.best_lr for result in tuning.values()}):
        served = [steps for steps in horizons if tuning[steps].best_lr == lr]
        run = clocks[served[-1]](name, lambda: run_baseline(name, lr, test_task, served[-1], test_seed, served))
        runs.update({steps: run.first(steps) for steps in served})
    return Part(runs, tuning, {steps: clock.seconds for steps, clock in clocks.items()})


def assemble(
    parts: dict[str, Part], test_task: Task, horizons: tuple[int, ...], bootstrap: int, test_seed: int
) -> dict[int, Comparison]:
    """The comparison for each horizon from every optimizer's part (`run_part`)."""
    longest = max(horizons)
    comparisons = {}
    for steps in horizons:
        tuned = {name: part.tuning[steps] for name, part in parts.items() if part.tuning}
        comparisons[steps] = _summarise(
            {name: part.runs[steps] for name, part in parts.items()}, test_task, steps,
            {name: result.best_lr for name, result in tuned.items()},
            {name: {"lrs": list(result.lrs), "scores": list(result.scores)} for name, result in tuned.items()},
            bootstrap, test_seed, {k: v for part in parts.values() for k, v in part.seconds[steps].items()},
            None if steps == longest else longest,
        )
    return comparisons


def _summarise(
    runs: dict[str, Run],
    test_task: Any,
    steps: int,
    learning_rates: dict[str, float],
    tuning: dict[str, Any],
    bootstrap: int,
    test_seed: int,
    seconds: dict[str, float],
    prefix_of: int | None,
) -> Comparison:
    """Statistics, curves and (for tasks with a test set) test accuracies of finished runs."""
    losses = {name: run.losses.double().numpy() for name, run in runs.items()}
    summaries = {name: summarize(run[-1], bootstrap, test_seed) for name, run in losses.items()}
    if hasattr(test_task, "test_accuracy"):  # tasks with a test set: the optimizee's accuracy
        for name, run in runs.items():
            accuracy = test_task.test_accuracy(run.params).double().cpu().numpy()
            summaries[name]["test_accuracy"] = float(accuracy.mean())
            summaries[name]["test_accuracy_ci"] = bootstrap_mean_interval(accuracy, bootstrap, test_seed)
    return Comparison(
        steps=steps,
        learning_rates=learning_rates,
        tuning=tuning,
        summaries=summaries,
        curves={name: mean_curve(run, min(bootstrap, 500), test_seed) for name, run in losses.items()},
        seconds=seconds,
        prefix_of=prefix_of,
    )


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
