"""The task interface: what a learned optimizer is trained and evaluated on.

A `TaskFamily` samples a `Task`: a batch of independent problems that are optimized together.
Every problem's parameters are one row of a `[problems, dim]` tensor, so a batch of problems
is one tensor computation and the learned optimizer sees one row per coordinate per problem.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Task(Protocol):
    """A batch of `num_problems` problems of `dim` parameters each."""

    num_problems: int
    dim: int

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """Initial parameters, shape [num_problems, dim]."""
        ...

    def sample_batch(self, generator: torch.Generator) -> Any:
        """The data for one optimization step (a minibatch), or None for deterministic tasks."""
        ...

    def loss(self, params: torch.Tensor, batch: Any) -> torch.Tensor:
        """Per-problem losses, shape [num_problems], differentiable in `params`."""
        ...

    def rows(self, start: int, stop: int) -> "Task":
        """Problems start..stop-1 as a task of their own, whose `loss` takes their rows of the
        parameters and of a minibatch (data-parallel meta-training, `meta.distributed`)."""
        ...


class TaskFamily(Protocol):
    """A distribution over problems."""

    def sample(self, num_problems: int, generator: torch.Generator) -> Task:
        """Draw `num_problems` independent problems as one batched `Task`."""
        ...
