"""The benchmark: every optimizer on every task of the suite (`tasks.suite`), one part at a time.

A part is one optimizer on one task: a tuned baseline's learning-rate tuning on validation
problems (seed `tuning_seed`) and its runs on the test problems (seed `test_seed`); an untuned
baseline's or a learned optimizer's test runs alone (learned optimizers run untuned, lr 1).
Every part draws its problems and minibatches from its own seeded generators, so parts are
independent: they run in any order, side by side in worker processes, and a part once written
to the run directory is never computed again, so an interrupted benchmark resumes where it
stopped. A run fails (`FAILURES`) when its final loss is non-finite, above its initial loss, or,
for classification and language models, not below the loss of guessing uniformly; a failed
run counts as an infinite loss in every statistic and is counted in its own column.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

import numpy as np
import torch

from optimizer3.configs import check_positive, field
from optimizer3.errors import UsageError
from optimizer3.evaluation.config import LearningRateGrid
from optimizer3.evaluation.runs import Learned, Run, run_baseline, run_learned
from optimizer3.evaluation.statistics import bootstrap_mean_interval, finite_or_inf, interval95, summarize
from optimizer3.evaluation.tuning import tune_learning_rates
from optimizer3.optim.baselines import BASELINES
from optimizer3.tasks.suite import SuiteTask

TUNED = ("sgd", "nag", "rmsprop", "adam", "adamw", "muon")
UNTUNED = ("adam-default", "prodigy", "schedule-free")
FAILURES = ("non-finite", "above initial loss", "not below chance", "tuning failed")
CURVE_POINTS = 200  # a part keeps its mean loss curve at most this many points long


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """How the suite is run: which baselines, seeds, tuning grid and bootstrap."""

    baselines: tuple[str, ...] = field(TUNED + UNTUNED, "baselines to run (untuned ones run at their defaults)")
    test_seed: int = field(2, "seed of the test problems")
    tuning_seed: int = field(1, "seed of the validation problems that tune the baselines")
    grid: LearningRateGrid = dataclasses.field(
        default_factory=lambda: LearningRateGrid(lr_min=1e-3, lr_max=1.0, per_decade=3, max_extensions=8))
    bootstrap: int = field(2000, "bootstrap resamples for the 95% intervals")

    def __post_init__(self) -> None:
        unknown = [name for name in self.baselines if name not in BASELINES]
        if unknown:
            raise UsageError(f"Unknown baseline optimizer: {unknown[0]!r}; choose from {', '.join(BASELINES)}")
        if self.test_seed == self.tuning_seed:
            raise UsageError(f"Invalid seeds: test and tuning seed are both {self.test_seed}; give them different values")
        check_positive(self, "bootstrap")

    @property
    def tuned(self) -> tuple[str, ...]:
        return tuple(name for name in self.baselines if BASELINES[name].tuned)


def part_settings(task: SuiteTask, config: BenchmarkConfig, optimizer: str) -> dict[str, Any]:
    """What a part's numbers depend on besides the code: a stored part is reused only if its
    settings are these."""
    settings = {"task": task.description, "steps": task.steps, "problems": task.problems, "test_seed": config.test_seed}
    if optimizer in BASELINES and BASELINES[optimizer].tuned:
        settings.update(tuning_problems=task.tuning_problems, tuning_seed=config.tuning_seed,
                        grid=dataclasses.asdict(config.grid))
    return settings


def run_part(
    task: SuiteTask, optimizer: str, learned: Learned | None, config: BenchmarkConfig,
    data_dir: str | os.PathLike[str] | None = None, device: str = "cpu",
) -> dict[str, Any]:
    """One optimizer (a baseline's name, or `learned` under any other name) on one task: its
    tuning, its test runs, and what they measured, as plain data."""
    began = time.perf_counter()
    family = task.family_of(data_dir, device)
    test = family.sample(task.problems, torch.Generator().manual_seed(config.test_seed))
    part: dict[str, Any] = {"task": task.name, "optimizer": optimizer, "settings": part_settings(task, config, optimizer)}
    if learned is not None:
        run, part["lr"] = run_learned(learned, test, task.steps, config.test_seed), 1.0
    elif BASELINES[optimizer].tuned:
        validation = family.sample(task.tuning_problems, torch.Generator().manual_seed(config.tuning_seed))
        try:
            tuning = tune_learning_rates(optimizer, validation, (task.steps,), config.tuning_seed, config.grid)[task.steps]
        except UsageError as error:  # every rate diverged, or the best stayed on the grid's edge
            return {**part, "lr": None, "tuning_failed": str(error), "failed": [FAILURES[3]] * task.problems}
        part["lr"], part["tuning"] = tuning.best_lr, {"lrs": list(tuning.lrs), "scores": list(tuning.scores)}
        run = run_baseline(optimizer, tuning.best_lr, test, task.steps, config.test_seed)
    else:
        part["lr"] = BASELINES[optimizer].default_lr
        run = run_baseline(optimizer, part["lr"], test, task.steps, config.test_seed)
    return {**part, **measure(run, test), "seconds": time.perf_counter() - began}


def measure(run: Run, test: Any) -> dict[str, Any]:
    """A run's initial and final losses, failures, test metric and mean curve, as lists."""
    losses = run.losses.double().numpy()
    chance = getattr(test, "chance_loss", None)
    measured = {"initial": losses[0].tolist(), "final": losses[-1].tolist(),
                "failed": run_failures(losses[0], losses[-1], chance)}
    name = getattr(test, "test_metric_name", None)
    if name is not None:
        measured["test_metric"] = {"name": name, "values": test.test_metric(run.params).double().cpu().tolist()}
    every = max(1, math.ceil((len(losses) - 1) / CURVE_POINTS))
    steps = list(range(0, len(losses), every)) + ([len(losses) - 1] if (len(losses) - 1) % every else [])
    with np.errstate(invalid="ignore"):
        measured["curve"] = {"steps": steps, "mean": finite_or_inf(losses[steps]).mean(axis=1).tolist()}
    return measured


def run_failures(initial: np.ndarray, final: np.ndarray, chance: float | None) -> list[str | None]:
    """Why each run failed (one of `FAILURES`), or None where it did not."""
    reasons = []
    for start, end in zip(np.asarray(initial, float), np.asarray(final, float)):
        if not np.isfinite(end):
            reasons.append(FAILURES[0])
        elif end > start:
            reasons.append(FAILURES[1])
        elif chance is not None and end >= chance:
            reasons.append(FAILURES[2])
        else:
            reasons.append(None)
    return reasons


def summarize_task(parts: dict[str, dict[str, Any]], learned: tuple[str, ...], config: BenchmarkConfig) -> dict[str, Any]:
    """Statistics of every optimizer on one task, and each learned optimizer's ratio to the
    best tuned baseline and to each untuned one (mean final loss over mean final loss, with a
    paired bootstrap 95% interval over the test problems)."""
    finals = {name: _scored(part) for name, part in parts.items()}
    optimizers = {}
    for name, part in parts.items():
        stats = summarize(finals[name], config.bootstrap, config.test_seed)
        entry = {"lr": part.get("lr"), "failed": sum(reason is not None for reason in part["failed"]),
                 "failures": sorted({reason for reason in part["failed"] if reason}), "problems": len(part["failed"]),
                 **{key: stats[key] for key in ("mean", "mean_ci", "median", "geometric_mean")}}
        if "test_metric" in part:
            values = finite_or_inf(part["test_metric"]["values"])
            entry["test_metric"] = {"name": part["test_metric"]["name"], "mean": float(values.mean()),
                                    "ci": bootstrap_mean_interval(values, config.bootstrap, config.test_seed)}
        if "tuning_failed" in part:
            entry["tuning_failed"] = part["tuning_failed"]
        optimizers[name] = entry
    # The best tuned baseline is the one whose tuned rate scored lowest on the validation
    # problems: chosen on the test problems, it would be biased towards their noise.
    tuned = [name for name in config.tuned if name in parts and parts[name].get("tuning")]
    best = min(tuned, key=lambda name: min(math.inf if v is None else v for v in parts[name]["tuning"]["scores"])) if tuned else None
    ratios = {}
    for name in learned:
        ratios[name] = {}
        for other in ([best] if best else []) + [u for u in config.baselines if u in parts and not BASELINES[u].tuned]:
            key = "best_tuned" if other == best else other
            ratios[name][key] = paired_ratio(finals[name], finals[other], config.bootstrap, config.test_seed)
    return {"optimizers": optimizers, "best_tuned": best, "ratios": ratios}


def _scored(part: dict[str, Any]) -> np.ndarray:
    """Final losses with every failed run counted as +inf."""
    final = finite_or_inf(part.get("final", [math.inf] * len(part["failed"])))
    return np.where([reason is None for reason in part["failed"]], final, np.inf)


def paired_ratio(numerator: np.ndarray, denominator: np.ndarray, samples: int, seed: int) -> dict[str, Any]:
    """mean(numerator) / mean(denominator) with a 95% percentile-bootstrap interval that
    resamples the test problems, the same ones for both (they ran on the same problems)."""
    if not np.isfinite(denominator).all():  # the reference failed runs: no ratio to speak of
        return {"ratio": None, "ci": [None, None], "reference_failed": True}
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(numerator), size=(samples, len(numerator)))
    with np.errstate(invalid="ignore", divide="ignore"):
        point = numerator.mean() / denominator.mean()
        boot = numerator[index].mean(axis=1) / denominator[index].mean(axis=1)
    boot = np.where(np.isnan(boot), np.inf, boot)
    low, high = interval95(boot)
    return {"ratio": float(point) if np.isfinite(point) else math.inf, "ci": [float(low), float(high)]}


def geometric_mean(ratios) -> float:
    """The geometric mean of ratios: infinite if any is, NaN if there are none."""
    ratios = np.asarray(ratios, dtype=float)
    if not len(ratios):
        return math.nan
    return float(np.exp(np.log(ratios).mean())) if np.isfinite(ratios).all() else math.inf


def overall(tasks: dict[str, dict[str, Any]], splits: dict[str, str], learned: str) -> dict[str, Any]:
    """One learned optimizer over each split's tasks: the tasks where it failed runs, the
    geometric mean and the largest of its ratios to the best tuned baseline (infinite where it
    failed; tasks where that baseline failed a test run have no ratio and are listed apart),
    and the tasks where it was behind by more than 25%."""
    summary = {}
    for split in dict.fromkeys(splits.values()):
        every = [name for name in tasks if splits[name] == split and learned in tasks[name]["ratios"]]
        names = [name for name in every if tasks[name]["ratios"][learned].get("best_tuned", {}).get("ratio") is not None]
        ratios = np.array([tasks[name]["ratios"][learned]["best_tuned"]["ratio"] for name in names], float)
        if not every:
            continue
        finite = ratios[np.isfinite(ratios)]
        geo, geo_finite = geometric_mean(ratios), geometric_mean(finite)
        summary[split] = {
            "tasks": len(names), "geometric_mean_ratio": geo,
            "worst_ratio": float(ratios.max()) if len(ratios) else math.nan,
            "geometric_mean_ratio_without_failures": geo_finite, "tasks_without_failures": len(finite),
            "failed_on": [n for n in every if tasks[n]["optimizers"][learned]["failed"]],
            "behind_by_25_percent": [n for n, r in zip(names, ratios) if 1.25 < r < math.inf],
            "no_ratio": [n for n in every if n not in names],
        }
    return summary
