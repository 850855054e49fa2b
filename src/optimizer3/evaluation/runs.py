"""Optimize a batch of problems with one optimizer and record the loss after every step.

The baselines and the learned optimizer are all `torch.optim` optimizers, run by one loop in the
same order of random draws, so that all of them see the same starting points and minibatches.
This loop is how a learned optimizer is applied outside its meta-training unroll: in
evaluation, in meta-training's validation, and (through `LearnedOptimizer`) by a user.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch

from optimizer3.learned.files import OptimizerConfig
from optimizer3.learned.lstm import MetaParams
from optimizer3.learned.mlp import MLPOptimizerConfig
from optimizer3.optim.baselines import BASELINES, make_baselines
from optimizer3.optim.learned import LearnedOptimizer
from optimizer3.tasks.base import Task

# A learned optimizer to run: its meta-parameters and architecture.
Learned = tuple[MetaParams, OptimizerConfig]


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
    return run_copies(make_optimizer, task, 1, steps, seed, keep)[0]


def run_copies(
    make_optimizer: Callable[[list], torch.optim.Optimizer],
    task: Task,
    copies: int,
    steps: int,
    seed: int,
    keep: Iterable[int] = (),
    per_problem: bool = False,
) -> list[Run]:
    """`run_optimizer` for `copies` copies of the problems in lockstep: every copy starts from the
    same parameters and sees the same minibatches, and `make_optimizer` gets one parameter
    tensor per copy (to give each its own hyperparameters, in its own parameter group). Copy c's
    run equals the run `run_optimizer` makes with copy c's optimizer alone; a task with a
    `copies_loss` method computes all copies' losses at once (for an MLP, one matrix product
    reads each minibatch for every copy), any other task one copy at a time.

    `per_problem`: give `make_optimizer`, for each copy, every problem's own tensors in the
    shapes of `task.parameter_shapes` (for optimizers that are not coordinatewise). An
    optimizer with an `eval` method (Schedule-Free) is switched to it before the final loss.
    """
    keep = sorted(set(keep) - {steps})
    if any(not 0 <= t < steps for t in keep):
        raise ValueError(f"Steps to keep must lie in [0, {steps}]; got {keep}")
    if copies < 1:
        raise ValueError(f"Invalid number of copies: {copies}; use 1 or more")
    generator = torch.Generator().manual_seed(seed)
    start = task.init(generator)
    if per_problem:
        leaves = [_problem_tensors(start, task.parameter_shapes) for _ in range(copies)]
        optimizer = make_optimizer(leaves)
        def current() -> list[torch.Tensor]:
            return [torch.cat([t.reshape(-1) for problem in copy for t in problem]).view(start.shape)
                    for copy in leaves]
    else:
        params = [start.clone().requires_grad_() for _ in range(copies)] if copies > 1 else [start.requires_grad_()]
        optimizer = make_optimizer(params)
        def current() -> list[torch.Tensor]:
            return params
    history, kept = [], []
    for t in range(steps + 1):
        if t == steps and hasattr(optimizer, "eval"):
            optimizer.eval()
        values = current()
        losses = _copies_loss(task, values, task.sample_batch(generator))
        history.append(losses.detach())
        if t in keep:
            kept.append((t, [p.detach().clone() for p in values]))
        if t == steps:
            break
        optimizer.zero_grad()
        losses.sum().backward()
        optimizer.step()
    history = torch.stack(history, dim=1).cpu()
    return [Run(history[c], values[c].detach(), tuple((t, kept_params[c]) for t, kept_params in kept))
            for c in range(copies)]


def _problem_tensors(start: torch.Tensor, shapes) -> list[list[torch.Tensor]]:
    """Each problem's parameters of `start` [problems, dim] as leaf tensors of `shapes`."""
    sizes = [math.prod(shape) for shape in shapes]
    return [[piece.reshape(shape).clone().requires_grad_() for piece, shape in zip(row.split(sizes), shapes)]
            for row in start.detach()]


def _copies_loss(task: Task, params: list[torch.Tensor], batch) -> torch.Tensor:
    """Losses [copies, problems] of each copy's parameters on the shared `batch`."""
    if len(params) == 1:
        return task.loss(params[0], batch).unsqueeze(0)
    if hasattr(task, "copies_loss"):
        return task.copies_loss(params, batch)
    return torch.stack([task.loss(p, batch) for p in params])


def run_baseline(name: str, lr: float, task: Task, steps: int, seed: int, keep: Iterable[int] = ()) -> Run:
    """`run_optimizer` with the baseline `name` at learning rate `lr`."""
    return run_baselines(name, [lr], task, steps, seed, keep)[0]


def run_baselines(name: str, lrs: list[float], task: Task, steps: int, seed: int, keep: Iterable[int] = ()) -> list[Run]:
    """`run_baseline` at each learning rate of `lrs`, as copies in lockstep (`run_copies`): the
    same runs, made faster by sharing each step's minibatch."""
    return run_copies(lambda params: make_baselines(name, params, lrs), task, len(lrs), steps, seed, keep,
                      per_problem=BASELINES[name].per_problem)


def run_learned(
    learned: Learned, task: Task, steps: int, seed: int, compile: bool = False, keep: Iterable[int] = ()
) -> Run:
    """`run_optimizer` with the learned optimizer, applied through `LearnedOptimizer` exactly as
    a user would apply it to their own model (`compile`: through `torch.compile`), on torch's
    threads as the command set them, like every other optimizer in a comparison. The
    per-parameter MLP normalizes its features over each tensor, so it gets every problem's own
    tensors (`task.parameter_shapes`); the coordinatewise LSTM gets them stacked."""
    meta_params, config = learned
    per_problem = isinstance(config, MLPOptimizerConfig)
    if per_problem and not hasattr(task, "parameter_shapes"):
        raise ValueError(f"The per-parameter MLP optimizer normalizes over each parameter tensor, and a "
                         f"{type(task).__name__} does not say its tensors (parameter_shapes); run it on a task that does")
    def make(copies: list) -> LearnedOptimizer:
        tensors = [t for problem in copies[0] for t in problem] if per_problem else copies
        return LearnedOptimizer(tensors, meta_params, config, compile=compile, threads=0)
    return run_copies(make, task, 1, steps, seed, keep, per_problem=per_problem)[0]


def tuning_score(final_losses: torch.Tensor) -> float:
    """Mean final loss, with a diverged problem (non-finite loss) counting as infinite."""
    losses = torch.nan_to_num(final_losses.double(), nan=math.inf, posinf=math.inf)
    return float(losses.mean())
