"""The settings of a comparison: which baselines, how many test problems, how they are tuned."""

from __future__ import annotations

import dataclasses
import math

from optimizer3.configs import check_positive, field
from optimizer3.errors import UsageError
from optimizer3.optim.baselines import BASELINES, check_baseline_names


@dataclasses.dataclass(frozen=True)
class LearningRateGrid:
    """A log-spaced grid of learning rates."""

    lr_min: float = field(1e-4, "smallest learning rate tried")
    lr_max: float = field(1.0, "largest learning rate tried")
    per_decade: int = field(4, "grid points per factor of 10 (at least 3)")
    max_extensions: int = field(4, "decades the grid may grow by when the best is at an edge")

    def __post_init__(self) -> None:
        if not (0 < self.lr_min < self.lr_max and math.isfinite(self.lr_max)):
            raise UsageError(f"Invalid learning-rate grid [{self.lr_min}, {self.lr_max}]; "
                             "use finite 0 < lr_min < lr_max")
        if self.per_decade < 3:
            raise UsageError(f"Invalid per_decade: {self.per_decade}; use 3 or more")
        if self.max_extensions < 0:
            raise UsageError(f"Invalid max_extensions: {self.max_extensions}; use 0 or more")

    def exponents(self) -> list[float]:
        """log10 of every grid point: from lr_min in steps of 1/per_decade of a decade, to the
        point nearest lr_max (lr_max itself when the range is whole steps)."""
        lo, hi = math.log10(self.lr_min), math.log10(self.lr_max)
        count = round((hi - lo) * self.per_decade)
        return [lo + i / self.per_decade for i in range(count + 1)]


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Tuned baselines and the learned optimizer on the same held-out test problems."""

    baselines: tuple[str, ...] = field(("sgd", "nag", "rmsprop", "adam"), "baseline optimizers to compare against")
    test_problems: int = field(1000, "held-out test problems")
    test_seed: int = field(2, "seed of the test problems (differs from training and validation)")
    steps: int = field(0, "optimizer steps per test problem; 0 means the meta-training horizon")
    tuning_problems: int = field(500, "validation problems used to tune baseline learning rates")
    grid: LearningRateGrid = dataclasses.field(default_factory=LearningRateGrid)
    bootstrap: int = field(2000, "bootstrap resamples for the 95% intervals")

    def __post_init__(self) -> None:
        check_baseline_names(self.baselines)
        if not self.baselines:
            raise UsageError(f"Invalid baselines: none given; name at least one of {', '.join(BASELINES)}")
        if not 0 <= self.test_seed < 2**63:
            raise UsageError(f"Invalid test_seed: {self.test_seed}; use an integer from 0 to 2^63 - 1")
        check_positive(self, "test_problems", "tuning_problems", "bootstrap")
        if self.steps < 0:
            raise UsageError(f"Invalid steps: {self.steps}; use a positive integer, or 0")
