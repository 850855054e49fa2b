"""Random quadratic functions f(θ) = ‖Wθ − y‖², the paper's first experiment.

References: Andrychowicz et al. 2016, section 3.1.
"""

from __future__ import annotations

import dataclasses

import torch

from optimizer3.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Quadratics:
    """A batch of quadratics: W of shape [problems, dim, dim], y of shape [problems, dim]."""

    weights: torch.Tensor
    targets: torch.Tensor

    @property
    def num_problems(self) -> int:
        return self.targets.shape[0]

    @property
    def dim(self) -> int:
        return self.targets.shape[1]

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

    def rows(self, start: int, stop: int) -> "Quadratics":
        """Problems start..stop-1 as a batch of their own."""
        return Quadratics(self.weights[start:stop], self.targets[start:stop])

    def to(self, device: torch.device | str) -> "Quadratics":
        return Quadratics(self.weights.to(device), self.targets.to(device))


@dataclasses.dataclass(frozen=True)
class QuadraticFamily:
    """W and y drawn i.i.d. standard normal for each problem (on the CPU, then moved to `device`)."""

    dim: int = 10
    device: torch.device | str = "cpu"

    def __post_init__(self) -> None:
        if self.dim < 1:
            raise UsageError(f"Invalid quadratic dimension: {self.dim}; use 1 or more")

    def sample(
        self, num_problems: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
    ) -> Quadratics:
        if num_problems < 1:
            raise UsageError(f"Invalid number of problems: {num_problems}; use 1 or more")
        weights = torch.randn(num_problems, self.dim, self.dim, generator=generator, dtype=dtype)
        targets = torch.randn(num_problems, self.dim, generator=generator, dtype=dtype)
        return Quadratics(weights, targets).to(self.device)
