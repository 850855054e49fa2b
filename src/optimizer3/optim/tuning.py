"""One learning-rate tuning protocol shared by every baseline.

Each baseline runs on the validation problems for every learning rate of a log-spaced grid;
the learning rate with the lowest mean final loss wins. When the best rate lies on an edge of
the grid, the grid grows by a decade on that side, so the winner is always an interior point.
Test problems are never seen here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from optimizer3.config import LearningRateGrid
from optimizer3.errors import UsageError
from optimizer3.tasks.base import Task
from optimizer3.trajectories import run_baseline, tuning_score


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
    scores: dict[float, float] = {}

    def score(exponent: float) -> float:
        if exponent not in scores:
            losses = run_baseline(name, 10.0**exponent, task, steps, seed).losses
            scores[exponent] = tuning_score(losses[-1])
        return scores[exponent]

    exponents = grid.exponents()
    step = 1.0 / grid.per_decade
    for _ in range(grid.max_extensions + 1):
        values = [score(e) for e in exponents]
        best = int(np.argmin(values))
        if not math.isfinite(values[best]):
            raise UsageError(f"Every learning rate diverged for {name}; widen the grid downwards")
        if 0 < best < len(exponents) - 1:
            break
        # The best rate is on an edge: grow the grid by one decade on that side.
        if best == 0:
            exponents = [exponents[0] - step * i for i in range(grid.per_decade, 0, -1)] + exponents
        else:
            exponents = exponents + [exponents[-1] + step * i for i in range(1, grid.per_decade + 1)]
    else:
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
