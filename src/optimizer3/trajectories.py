"""Optimize a batch of problems with one optimizer and record the loss after every step.

The baselines and the learned optimizer are all `torch.optim` optimizers, run by one loop in the
same order of random draws, so that all of them see the same starting points and minibatches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams
from optimizer3.optim.baselines import make_baseline
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks.base import Task


class Run(NamedTuple):
    """Losses after every step, shape [steps + 1, problems], the final parameters, and the
    parameters after each earlier step count that the run was asked to keep."""

    losses: torch.Tensor
    params: torch.Tensor
    kept: tuple[tuple[int, torch.Tensor], ...] = ()

    @property
    def steps(self) -> int:
        return len(self.losses) - 1

    def first(self, steps: int) -> "Run":
        """This run cut after `steps` steps: the same losses and parameters that a run of
        `steps` steps makes, as every step depends only on the steps before it."""
        if steps == self.steps:
            return self
        params = dict(self.kept).get(steps)
        if params is None:
            raise ValueError(f"This run kept no parameters after step {steps}; pass keep=({steps},)")
        return Run(self.losses[: steps + 1], params)


def run_optimizer(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    task: Task,
    steps: int,
    seed: int,
    keep: Iterable[int] = (),
) -> Run:
    """Optimize every problem of `task` with a `torch.optim` optimizer; losses [steps + 1, problems].

    Row t of the losses holds the losses after t updates; the losses come back on the CPU, the
    parameters on the task's device. Initial parameters and minibatches
    are drawn from a generator seeded with `seed`, in the same order for every optimizer. The
    problems are independent and every optimizer here is coordinatewise, so one optimizer over
    the stacked parameters is one optimizer per problem. `keep`: earlier step counts after
    which to keep a copy of the parameters, so that `Run.first` can stand for a shorter run.
    """
    keep = sorted(set(keep) - {steps})
    if any(not 0 <= t < steps for t in keep):
        raise ValueError(f"Steps to keep must lie in [0, {steps}]; got {keep}")
    generator = torch.Generator().manual_seed(seed)
    params = task.init(generator).requires_grad_()
    optimizer = make_optimizer([params])
    history, kept = [], []
    for t in range(steps + 1):
        losses = task.loss(params, task.sample_batch(generator))
        history.append(losses.detach())
        if t in keep:
            kept.append((t, params.detach().clone()))
        if t == steps:
            break
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
    return Run(torch.stack(history).cpu(), params.detach(), tuple(kept))


def run_baseline(name: str, lr: float, task: Task, steps: int, seed: int, keep: Iterable[int] = ()) -> Run:
    """`run_optimizer` with the baseline `name` at learning rate `lr`."""
    return run_optimizer(lambda params: make_baseline(name, params, lr), task, steps, seed, keep)


def run_learned(
    meta_params: MetaParams,
    config: LSTMOptimizerConfig,
    task: Task,
    steps: int,
    seed: int,
    compile: bool = False,
    keep: Iterable[int] = (),
) -> Run:
    """`run_optimizer` with the learned optimizer, applied through `LearnedOptimizer` exactly as
    a user would apply it to their own model (`compile`: through `torch.compile`)."""
    return run_optimizer(
        lambda params: LearnedOptimizer(params, meta_params, config, compile=compile), task, steps, seed, keep
    )


def tuning_score(final_losses: torch.Tensor) -> float:
    """Mean final loss, with a diverged problem (non-finite loss) counting as infinite."""
    losses = torch.nan_to_num(final_losses.double(), nan=math.inf, posinf=math.inf)
    return float(losses.mean())
