"""Random quadratic functions f(θ) = ‖Wθ − y‖², the paper's first experiment, with optional
spreads of scale and condition number (where a learned optimizer meets curvature it never saw).

References: Andrychowicz et al. 2016, section 3.1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch

from optimizer3.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Quadratics:
    """A batch of quadratics: W of shape [problems, dim, dim], y of shape [problems, dim]."""

    weights: torch.Tensor
    targets: torch.Tensor

    chance_loss = None  # no reference prediction
    test_metric_name = None  # no test set: the loss is the measure

    @property
    def num_problems(self) -> int:
        return self.targets.shape[0]

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((self.dim,),)

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """θ₀ = 0 for every problem."""
        del generator  # the start is deterministic
        return torch.zeros_like(self.targets)

    def sample_batch(self, generator: torch.Generator) -> None:
        del generator  # a quadratic has no data
        return None

    def loss(self, params: torch.Tensor, batch: None = None) -> torch.Tensor:
        """‖Wθ − y‖² for each problem, shape [problems]."""
        del batch
        residual = torch.bmm(self.weights, params.unsqueeze(-1)).squeeze(-1) - self.targets
        return residual.square().sum(dim=-1)

    def copies_loss(self, params: Sequence[torch.Tensor], batch: None = None) -> torch.Tensor:
        """`loss` of several copies of the problems, shape [copies, problems]: one `loss` per
        copy, the same numbers that runs of one copy at a time compute."""
        return torch.stack([self.loss(copy, batch) for copy in params])

    def rows(self, start: int, stop: int) -> "Quadratics":
        """Problems start..stop-1 as a batch of their own."""
        return Quadratics(self.weights[start:stop], self.targets[start:stop])

    def to(self, device: torch.device | str) -> "Quadratics":
        return Quadratics(self.weights.to(device), self.targets.to(device))


@dataclasses.dataclass(frozen=True)
class QuadraticFamily:
    """W and y drawn i.i.d. standard normal for each problem (on the CPU, then moved to `device`).

    `scale_decades=(lo, hi)`: each problem's W is multiplied by 10**u, u ~ U(lo, hi), so that
    the curvature spans 2 * (hi - lo) decades across problems. `condition_decades=c`: column j
    of W is multiplied by 10**(-c * j / (dim - 1)), a diagonal D of condition number 10**c, so
    that cond(W)·10**c ≥ cond(WD) ≥ 10**c / cond(W) (the Hessian 2(WD)ᵀWD squares it; at dim 10,
    c = 4 moves the median log10 cond(W) from 1.5 to 4.7). With the defaults, the draws are the
    plain family's.
    """

    dim: int = 10
    device: torch.device | str = "cpu"
    scale_decades: tuple[float, float] = (0.0, 0.0)
    condition_decades: float = 0.0

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise UsageError(f"Invalid quadratic dimension: {self.dim}; use 1 or more")
        scale = tuple(self.scale_decades)
        if not (len(scale) == 2 and all(map(math.isfinite, scale)) and scale[0] <= scale[1]):
            raise UsageError(
                f"Invalid scale_decades: {self.scale_decades}; give two finite exponents (lo, hi) with lo <= hi"
            )
        if not (math.isfinite(self.condition_decades) and self.condition_decades >= 0):
            raise UsageError(f"Invalid condition_decades: {self.condition_decades}; use a finite number >= 0")
        if self.condition_decades > 0 and self.dim < 2:
            raise UsageError(
                f"condition_decades={self.condition_decades} needs two or more dimensions; got dim={self.dim}"
            )

    def sample(
        self, num_problems: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Quadratics:
        if num_problems < 1:
            raise UsageError(f"Invalid number of problems: {num_problems}; use 1 or more")
        weights = torch.randn(num_problems, self.dim, self.dim, generator=generator, dtype=dtype)
        targets = torch.randn(num_problems, self.dim, generator=generator, dtype=dtype)
        # The options' numbers are drawn after the plain family's, and only when set, so that
        # the default family's problems stay the same.
        if any(self.scale_decades):
            low, high = self.scale_decades
            exponents = low + (high - low) * torch.rand(num_problems, generator=generator, dtype=torch.float64)
            weights = weights * (10.0**exponents).to(dtype).view(-1, 1, 1)
        if self.condition_decades:
            columns = torch.arange(self.dim, dtype=torch.float64) / (self.dim - 1)
            weights = weights * (10.0 ** (-self.condition_decades * columns)).to(dtype)
        return Quadratics(weights, targets).to(self.device)
