"""The task interface: what a learned optimizer is trained and evaluated on.

A `TaskFamily` samples a `Task`: a batch of independent problems that are optimized together.
Every problem's parameters are one row of a `[problems, dim]` tensor, so a batch of problems
is one tensor computation and the learned optimizer sees one row per coordinate per problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch


class Task(Protocol):
    """A batch of `num_problems` problems of `dim` parameters each.

    Tasks may also have the members of `BenchmarkTask`, which the benchmark reads (look them
    up with `hasattr`: a task that lacks one is simply not measured that way).
    """

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


class BenchmarkTask(Task, Protocol):
    """A `Task` with the optional members that the benchmark uses."""

    # One problem's parameter tensors, in the order in which its row holds them; their numels
    # sum to `dim`. Weight matrices are 2-D (conv kernels as (out_channels, in_channels * k * k))
    # so that optimizers of matrices (Muon) can take them.
    parameter_shapes: tuple[tuple[int, ...], ...]
    # The loss of predicting the uniform distribution (ln classes), or None where no such
    # reference exists (quadratics).
    chance_loss: float | None
    # What `test_metric` measures ("test accuracy", "held-out loss"), or None: no test metric.
    test_metric_name: str | None

    def test_metric(self, params: torch.Tensor) -> torch.Tensor:
        """Each problem's `test_metric_name` at `params`, shape [num_problems], without gradients."""
        ...

    def copies_loss(self, params: Sequence[torch.Tensor], batch: Any) -> torch.Tensor:
        """`loss` of several copies of the problems, each with its own [num_problems, dim]
        parameters, on the same `batch`, shape [copies, num_problems]: copy c's row equals
        `loss(params[c], batch)`, computed together where that is faster."""
        ...


class TaskFamily(Protocol):
    """A distribution over problems."""

    def sample(self, num_problems: int, generator: torch.Generator) -> Task:
        """Draw `num_problems` independent problems as one batched `Task`."""
        ...
