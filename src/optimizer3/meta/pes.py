"""Persistent evolution strategies (PES): meta-gradients from forward passes alone.

A chain is a batch of antithetic pairs: pair i optimizes one problem twice, once with the
meta-parameters θ + ε_i and once with θ − ε_i, on the same minibatches. Every truncation draws
fresh perturbations ε_i, runs both copies `steps` steps on from where they stand, and measures
each copy's meta-loss (the mean of log(loss + floor) over the truncation's steps). Truncated ES
would estimate the meta-gradient as ε_i (L⁺_i − L⁻_i) / 2σ², which is biased: the copies
stand where earlier perturbations took them. PES removes that bias by using instead the sum ξ_i
of every perturbation that pair has received since its chain began:

    g = 1 / (2 σ² n) Σ_i ξ_i (L⁺_i − L⁻_i)

an unbiased estimate of the gradient of the Gaussian-smoothed meta-loss over the whole chain,
at the memory of one step and without backpropagation through the unroll, so that chains can
run for thousands of steps. A pair whose loss or parameters turn non-finite drops out of its
chain (and of every later estimate of it); a truncation in which every pair has dropped out
yields no estimate (`count` 0), and the trainer skips that meta-update and counts it.

The step of the learned optimizer is `learned.mlp.mlp_step`, the same function
`LearnedOptimizer` calls, run for all 2n perturbed optimizers at once (one set of
meta-parameters per copy).

References: Vicol, Metz and Sohl-Dickstein 2021, "Unbiased gradient estimation in unrolled
computation graphs with persistent evolution strategies", Algorithm 2 (antithetic PES);
Salimans et al. 2017 for antithetic sampling.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from optimizer3.learned.mlp import MetaParams, MLPOptimizerConfig, MLPState, init_state, matrix_shape, mlp_step
from optimizer3.tasks.base import Task


class Chain(NamedTuple):
    """Where a chain's pairs stand: parameters [2, pairs, dim] (the θ + ε copies, then the
    θ − ε ones), the optimizer state of each parameter tensor for all 2 x pairs copies, each
    pair's accumulated perturbation [pairs, meta_dim], which pairs are still finite, and the
    steps taken."""

    params: torch.Tensor
    states: tuple[MLPState, ...]
    accumulated: torch.Tensor
    alive: torch.Tensor
    steps: int


class Estimate(NamedTuple):
    """One truncation's contribution: the sum over finite pairs of ξ_i (L⁺_i − L⁻_i) / 2σ²
    (divide by `count` for the estimate), how many pairs were finite, the sum over them of the
    pair's mean meta-loss, and of the squared differences (L⁺_i − L⁻_i)²."""

    total: torch.Tensor
    count: int
    meta_loss: float
    squared_differences: float = 0.0


def flatten(meta_params: MetaParams) -> torch.Tensor:
    """The meta-parameters as one vector, in the order of their names."""
    return torch.cat([meta_params[name].reshape(-1) for name in sorted(meta_params)])


def unflatten(vectors: torch.Tensor, like: MetaParams) -> MetaParams:
    """Meta-parameters from a vector (shapes of `like`), or from a batch of vectors [batch,
    meta_dim] (each meta-parameter with a leading batch dimension)."""
    batch = vectors.shape[:-1]
    result, offset = {}, 0
    for name in sorted(like):
        size = like[name].numel()
        result[name] = vectors[..., offset : offset + size].reshape((*batch, *like[name].shape))
        offset += size
    return result


def start_chain(task: Task, config: MLPOptimizerConfig, generator: torch.Generator, meta_dim: int) -> Chain:
    """Both copies of every pair at the task's initial parameters, with zero optimizer state."""
    start = task.init(generator)
    pairs = task.num_problems
    states = tuple(init_state(config, 2 * pairs, *matrix_shape(shape), dtype=start.dtype, device=start.device)
                   for shape in task.parameter_shapes)
    return Chain(torch.stack([start, start]), states, torch.zeros(pairs, meta_dim, dtype=start.dtype),
                 torch.ones(pairs, dtype=torch.bool), 0)


def optimizer_step(meta_params: MetaParams, params: torch.Tensor, grads: torch.Tensor, states: tuple[MLPState, ...],
                   shapes, config: MLPOptimizerConfig) -> tuple[torch.Tensor, tuple[MLPState, ...]]:
    """The learned update of parameters [copies, problems, dim] laid out as `shapes`, tensor by
    tensor, with one set of meta-parameters per copy-and-problem row (or one for all)."""
    rows = params.shape[0] * params.shape[1]
    flat_params, flat_grads = params.reshape(rows, -1), grads.reshape(rows, -1)
    updates, new_states, offset = [], [], 0
    for shape, state in zip(shapes, states):
        size = math.prod(shape)
        matrix = (rows, *matrix_shape(shape))
        update, new_state = mlp_step(meta_params, flat_params[:, offset : offset + size].reshape(matrix),
                                     flat_grads[:, offset : offset + size].reshape(matrix), state, config)
        updates.append(update.reshape(rows, size))
        new_states.append(new_state)
        offset += size
    return torch.cat(updates, dim=1).view_as(params), tuple(new_states)


def _losses(task: Task, params: torch.Tensor, batch) -> torch.Tensor:
    """Losses [copies, problems] of every copy on one minibatch."""
    copies = list(params.unbind(0))
    if hasattr(task, "copies_loss"):
        return task.copies_loss(copies, batch)
    return torch.stack([task.loss(copy, batch) for copy in copies])


def _original(task: Task, losses: torch.Tensor) -> torch.Tensor:
    """The losses that matter: an augmented task's losses without its loss factors."""
    return task.original_loss(losses) if hasattr(task, "original_loss") else losses


def run_steps(meta_params: MetaParams, task: Task, chain: Chain, steps: int, generator: torch.Generator,
              config: MLPOptimizerConfig, floor: float) -> tuple[torch.Tensor, Chain]:
    """Advance every copy `steps` steps; return each copy's mean log(loss + floor) over them,
    [copies, problems], and the chain after them (accumulated perturbations unchanged)."""
    params, states = chain.params, chain.states
    log_losses = torch.zeros(params.shape[:2], dtype=torch.float64)
    for _ in range(steps):
        batch = task.sample_batch(generator)
        leaf = params.detach().requires_grad_()
        with torch.enable_grad():
            losses = _losses(task, leaf, batch)
            (grads,) = torch.autograd.grad(losses.sum(), leaf)
        log_losses += torch.log(_original(task, losses.detach()).double().cpu() + floor)
        with torch.no_grad():
            updates, states = optimizer_step(meta_params, leaf.detach(), grads, states, task.parameter_shapes, config)
            params = leaf.detach() + updates
    return log_losses / steps, chain._replace(params=params, states=states, steps=chain.steps + steps)


def pes_estimate(theta: torch.Tensor, perturbations: torch.Tensor, like: MetaParams, task: Task, chain: Chain,
                 steps: int, generator: torch.Generator, config: MLPOptimizerConfig, sigma: float,
                 floor: float) -> tuple[Estimate, Chain]:
    """One truncation of antithetic PES.

    Args:
      theta: the meta-parameters as a vector (`flatten`).
      perturbations: ε, [pairs, meta_dim], one per pair of the chain, standard deviation `sigma`.
      like: meta-parameters of the architecture (their names and shapes).
      task, chain: the chain's problems (one per pair) and where its copies stand.
      steps: the truncation's length; `floor`: added to each loss before its log.

    Returns the `Estimate` and the chain after the truncation.
    """
    accumulated = chain.accumulated + perturbations
    both = torch.cat([theta + perturbations, theta - perturbations])
    meta_params = unflatten(both.to(device=chain.params.device, dtype=chain.params.dtype), like)
    log_losses, chain = run_steps(meta_params, task, chain, steps, generator, config, floor)
    difference = log_losses[0] - log_losses[1]
    finite_params = torch.isfinite(chain.params).all(dim=2).all(dim=0).cpu()
    alive = chain.alive & torch.isfinite(difference) & finite_params
    weights = torch.where(alive, difference, 0.0).to(accumulated.dtype)
    total = (accumulated * weights.unsqueeze(1)).sum(dim=0) / (2 * sigma**2)
    meta_loss = float(log_losses.mean(dim=0)[alive].sum()) if alive.any() else 0.0
    estimate = Estimate(total, int(alive.sum()), meta_loss, float(weights.double().square().sum()))
    return estimate, chain._replace(accumulated=accumulated, alive=alive)


@torch.no_grad()
def evaluate(meta_params: MetaParams, task: Task, steps: int, seed: int, config: MLPOptimizerConfig) -> torch.Tensor:
    """Final losses [problems] of the learned optimizer (one set of meta-parameters) after
    `steps` steps, drawing the start and the minibatches from a generator seeded with `seed`
    in the order in which `evaluation.runs` draws them: the losses `run_learned` gives."""
    generator = torch.Generator().manual_seed(seed)
    start = task.init(generator)
    meta_params = {name: tensor.to(device=start.device, dtype=start.dtype) for name, tensor in meta_params.items()}
    chain = Chain(start.unsqueeze(0), tuple(init_state(config, task.num_problems, *matrix_shape(shape),
                                                       dtype=start.dtype, device=start.device)
                                            for shape in task.parameter_shapes),
                  torch.zeros(0), torch.ones(task.num_problems, dtype=torch.bool), 0)
    _, chain = run_steps(meta_params, task, chain, steps, generator, config, 1.0)
    return _original(task, _losses(task, chain.params, task.sample_batch(generator))[0])
