"""One learning-rate tuning protocol shared by every baseline.

Each baseline runs on the validation problems for every learning rate of a log-spaced grid;
the learning rate with the lowest mean final loss wins. When the best rate lies on an edge of
the grid, the grid grows by a decade on that side, so the winner is always an interior point;
when every rate diverged, it grows downwards.
Test problems are never seen here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from optimizer3.evaluation.config import LearningRateGrid
from optimizer3.errors import UsageError
from optimizer3.tasks.base import Task
from optimizer3.evaluation.runs import run_baselines, tuning_score


@dataclasses.dataclass(frozen=True)
class TuningResult:
    """The tuned learning rate and the score of every rate tried, in increasing order."""

    name: str
    best_lr: float
    lrs: tuple[float, ...]
    scores: tuple[float, ...]


def tune_learning_rate(
    name: str, task: Task, steps: int, seed: int, grid: LearningRateGrid
) -> TuningResult:
    """Pick the learning rate of baseline `name` on the validation problems `task`."""
    return tune_learning_rates(name, task, (steps,), seed, grid)[steps]


def tune_learning_rates(
    name: str, task: Task, horizons: tuple[int, ...], seed: int, grid: LearningRateGrid
) -> dict[int, TuningResult]:
    """`tune_learning_rate` for several numbers of steps at once, from the same runs.

    Every rate is run once, for the longest horizon; a shorter horizon is scored on the first
    steps of those runs, which equal runs of its own length (`Run.first`).
    """
    longest = max(horizons)
    losses: dict[float, torch.Tensor] = {}

    def scores(exponents: list[float], steps: int) -> list[float]:
        missing = [exponent for exponent in exponents if exponent not in losses]
        if missing:  # every rate not yet run, in lockstep: the same runs, sharing each minibatch
            runs = run_baselines(name, [10.0**exponent for exponent in missing], task, longest, seed)
            losses.update(zip(missing, (run.losses for run in runs)))
        return [tuning_score(losses[exponent][steps]) for exponent in exponents]

    return {steps: _tune(name, grid, lambda exponents, steps=steps: scores(exponents, steps)) for steps in horizons}


def _tune(name: str, grid: LearningRateGrid, score: Callable[[list[float]], list[float]]) -> TuningResult:
    """The protocol over log10 learning rates, given a function that scores several of them."""
    scores: dict[float, float] = {}
    exponents = grid.exponents()
    step = 1.0 / grid.per_decade
    for _ in range(grid.max_extensions + 1):
        missing = [exponent for exponent in exponents if exponent not in scores]
        scores.update(zip(missing, score(missing), strict=True))
        values = [scores[exponent] for exponent in exponents]
        best = int(np.argmin(values))  # every rate diverged: 0, so the grid grows downwards
        if math.isfinite(values[best]) and 0 < best < len(exponents) - 1:
            break
        # The best rate is on an edge: grow the grid by one decade on that side.
        if best == 0:
            exponents = [exponents[0] - step * i for i in range(grid.per_decade, 0, -1)] + exponents
        else:
            exponents = exponents + [exponents[-1] + step * i for i in range(1, grid.per_decade + 1)]
    else:
        if not math.isfinite(min(scores.values())):
            raise UsageError(f"Every learning rate diverged for {name}, down to {10.0 ** exponents[0]:.3g}; "
                             "widen the grid downwards")
        raise UsageError(
            f"The best learning rate for {name} is still on the grid's edge after "
            f"{grid.max_extensions} extensions; widen --lr-min/--lr-max"
        )
    ordered = sorted(scores)
    return TuningResult(
        name=name,
        best_lr=10.0 ** exponents[best],
        lrs=tuple(10.0**e for e in ordered),
        scores=tuple(scores[e] for e in ordered),
    )
