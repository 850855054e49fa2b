"""Optimize a batch of problems with one optimizer and record the loss after every step.

The baselines and the learned optimizer are run by the two functions here, in the same order
of random draws, so that all of them see the same starting points and minibatches.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams
from optimizer3.meta.unroll import start, unroll
from optimizer3.optim.baselines import make_baseline
from optimizer3.tasks.base import Task


class Run(NamedTuple):
    """Losses after every step, shape [steps + 1, problems], and the final parameters."""

    losses: torch.Tensor
    params: torch.Tensor


def run_baseline(name: str, lr: float, task: Task, steps: int, seed: int) -> Run:
    """Optimize every problem of `task` with a baseline; losses of shape [steps + 1, problems].

    Row t holds the losses after t updates. The problems are independent and the baselines
    are coordinatewise, so one optimizer over the stacked parameters is one optimizer per
    problem.
    """
    generator = torch.Generator().manual_seed(seed)
    params = task.init(generator).requires_grad_()
    optimizer = make_baseline(name, [params], lr)
    history = []
    for t in range(steps + 1):
        losses = task.loss(params, task.sample_batch(generator))
        history.append(losses.detach())
        if t == steps:
            break
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
    return Run(torch.stack(history), params.detach())


@torch.no_grad()
def run_learned(
    meta_params: MetaParams, config: LSTMOptimizerConfig, task: Task, steps: int, seed: int
) -> Run:
    """Optimize every problem of `task` with the learned optimizer; losses [steps + 1, problems].

    Uses the meta-trainer's own `unroll`, with the same generator order as `run_baseline`, so
    both see the same initial parameters and minibatches.
    """
    generator = torch.Generator().manual_seed(seed)
    carry, initial = start(task, config, generator)
    _, carry, losses = unroll(meta_params, config, task, carry, steps, generator)
    return Run(torch.cat((initial.unsqueeze(0), losses)), carry.params)


def tuning_score(final_losses: torch.Tensor) -> float:
    """Mean final loss, with a diverged problem (non-finite loss) counting as infinite."""
    losses = torch.nan_to_num(final_losses.double(), nan=math.inf, posinf=math.inf)
    return float(losses.mean())
