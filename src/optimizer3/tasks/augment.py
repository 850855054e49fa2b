"""Task augmentation: the same problems, reparameterized and rescaled at random.

A `Reparameterized` task optimizes q with θ = c ⊙ q, where c holds one positive factor per
parameter tensor of each problem, and multiplies each problem's loss by a positive factor s. The
minimizers and the losses that matter are the original ones (θ = c ⊙ q, loss / s), but the
gradients an optimizer sees are c ⊙ s ∇L(θ), and its steps in q move θ by c ⊙ Δq: a learned
optimizer meta-trained on such tasks cannot rely on one scale of parameters or of gradients.

References: Moudgil et al. 2025 (Celo), section 3 (task augmentation by reparameterization);
Metz et al. 2022 (VeLO), appendix on task augmentation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch

from optimizer3.tasks.base import Task


def tensor_factors(shapes: Sequence[tuple[int, ...]], problems: int, decades: float,
                   generator: torch.Generator) -> torch.Tensor:
    """One factor 10**u, u ~ U(-decades, decades), per tensor of each problem, spread over that
    tensor's coordinates: shape [problems, dim]."""
    sizes = [math.prod(shape) for shape in shapes]
    exponents = (torch.rand(problems, len(sizes), generator=generator) * 2 - 1) * decades
    return torch.repeat_interleave(10.0 ** exponents, torch.tensor(sizes), dim=1)


@dataclasses.dataclass(frozen=True)
class Reparameterized:
    """`task` optimized in q = θ / `scales` (per coordinate, [problems, dim]), its losses
    multiplied by `loss_scales` ([problems]). `original_loss` undoes the loss factor."""

    task: Task
    scales: torch.Tensor
    loss_scales: torch.Tensor

    @property
    def num_problems(self) -> int:
        return self.task.num_problems

    @property
    def dim(self) -> int:
        return self.task.dim

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        return self.task.parameter_shapes

    def init(self, generator: torch.Generator) -> torch.Tensor:
        return self.task.init(generator) / self.scales

    def sample_batch(self, generator: torch.Generator) -> Any:
        return self.task.sample_batch(generator)

    def loss(self, params: torch.Tensor, batch: Any) -> torch.Tensor:
        return self.task.loss(params * self.scales, batch) * self.loss_scales

    def copies_loss(self, params: Sequence[torch.Tensor], batch: Any) -> torch.Tensor:
        """`loss` of several copies of the parameters on one minibatch, [copies, problems]."""
        originals = [copy * self.scales for copy in params]
        if hasattr(self.task, "copies_loss"):
            losses = self.task.copies_loss(originals, batch)
        else:
            losses = torch.stack([self.task.loss(copy, batch) for copy in originals])
        return losses * self.loss_scales

    def original_loss(self, losses: torch.Tensor) -> torch.Tensor:
        """The losses of the task itself, from losses of this one ([..., problems])."""
        return losses / self.loss_scales

    def rows(self, start: int, stop: int) -> "Reparameterized":
        return Reparameterized(self.task.rows(start, stop), self.scales[start:stop], self.loss_scales[start:stop])


def augment(task: Task, generator: torch.Generator, parameter_decades: float, loss_decades: float,
            device: torch.device | str = "cpu") -> Reparameterized:
    """`task` with random per-tensor parameter factors and per-problem loss factors, each
    10**u with u uniform within the given decades either side of 0."""
    scales = tensor_factors(task.parameter_shapes, task.num_problems, parameter_decades, generator)
    loss_scales = 10.0 ** ((torch.rand(task.num_problems, generator=generator) * 2 - 1) * loss_decades)
    return Reparameterized(task, scales.to(device), loss_scales.to(device))
