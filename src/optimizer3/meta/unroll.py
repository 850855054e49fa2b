"""The unrolled optimization of a batch of problems by the learned optimizer.

Meta-training differentiates through `unroll`: the optimizee's parameters are tensors of the
meta-graph here, updated by the pure step `learned.lstm_fast.lstm_step`. Outside meta-training
(evaluation, validation, a user's model) the same step is applied through `LearnedOptimizer`.

References: Andrychowicz et al. 2016, section 2 and Figure 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from optimizer3.learned.lstm import LSTMOptimizerConfig, LSTMState, MetaParams, init_state
from optimizer3.learned.lstm_fast import step_function
from optimizer3.tasks.base import Task


class Carry(NamedTuple):
    """What one truncation hands to the next: parameters, their gradient, the LSTM state,
    the step count, and each problem's initial loss (the scale of the loss normaliser)."""

    params: torch.Tensor
    grads: torch.Tensor
    state: LSTMState
    step: int
    initial_losses: torch.Tensor

    def detach(self) -> "Carry":
        return Carry(self.params.detach(), self.grads.detach(), self.state.detach(), self.step,
                     self.initial_losses)


def normalize_losses(losses: torch.Tensor, initial_losses: torch.Tensor, clip: float) -> torch.Tensor:
    """Each problem's loss clipped at `clip` times its initial loss, non-finite values at the cap.

    One blown-up problem then adds at most `clip` times its starting loss to the meta-loss, and
    no gradient while its parameters are finite: it cannot dominate a meta-update. Once its
    parameters themselves are inf or NaN, the backward multiplies the cap's zero gradient by them
    and the meta-gradient is NaN; the trainer then skips that meta-update (`train_trajectory`).
    `clip` = 0 returns the losses unchanged.
    """
    if clip <= 0:
        return losses
    cap = clip * initial_losses
    return torch.minimum(torch.nan_to_num(losses, nan=torch.inf), cap)


LOG_LOSS_EPS = 1e-8


def meta_objective_terms(
    losses: torch.Tensor, initial_losses: torch.Tensor, clip: float, log_loss: bool
) -> torch.Tensor:
    """Each problem's contribution to the meta-loss at one step: its (clipped) loss, or the log
    of it plus `LOG_LOSS_EPS` with `log_loss`."""
    values = normalize_losses(losses, initial_losses, clip)
    return torch.log(values + LOG_LOSS_EPS) if log_loss else values


def loss_and_grad(
    task: Task, params: torch.Tensor, batch: object, second_order: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-problem losses at `params` and the gradient of their sum.

    The gradient is a constant of the meta-graph unless `second_order`: dropping its
    dependence on the meta-parameters is the paper's approximation (no Hessian of the
    optimizee), which makes the meta-gradient much cheaper.
    """
    in_graph = params.requires_grad
    if not in_graph:
        params = params.detach().requires_grad_()
    with torch.enable_grad():
        losses = task.loss(params, batch)
        (grads,) = torch.autograd.grad(
            losses.sum(), params, retain_graph=in_graph, create_graph=second_order and in_graph
        )
    return (losses if in_graph else losses.detach()), grads


def start(
    task: Task, config: LSTMOptimizerConfig, generator: torch.Generator
) -> tuple[Carry, torch.Tensor]:
    """Initial parameters, their loss and gradient, and a zero LSTM state."""
    params = task.init(generator)
    losses, grads = loss_and_grad(task, params, task.sample_batch(generator), second_order=False)
    state = init_state(config, params.numel(), dtype=params.dtype, device=params.device)
    return Carry(params, grads, state, 0, losses.detach()), losses.detach()


def unroll(
    meta_params: MetaParams,
    config: LSTMOptimizerConfig,
    task: Task,
    carry: Carry,
    steps: int,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
    second_order: bool = False,
    loss_clip: float = 0.0,
    log_loss: bool = False,
    compile: bool = False,
    matmul_dtype: str = "float32",
    batches: list | None = None,
) -> tuple[torch.Tensor, Carry, torch.Tensor]:
    """Run the learned optimizer for `steps` steps from `carry`.

    Args:
      meta_params: the LSTM's weights.
      config: the LSTM's architecture.
      task: the batch of problems being optimized.
      carry: where the previous truncation stopped (or `start`).
      steps: number of optimizer steps.
      generator: draws the minibatches of tasks that have data.
      weights: meta-loss weight for each of the `steps` losses; ones when None.
      second_order: keep the optimizee's second derivatives in the meta-graph.
      loss_clip: clip each loss in the meta-loss at this multiple of the problem's initial
        loss (`normalize_losses`); 0 disables.
      log_loss: the meta-loss sums the log of each loss instead (`meta_objective_terms`).
      compile: run the LSTM step through `torch.compile` (`learned.lstm_fast.step_function`).
      matmul_dtype: the dtype of the LSTM's matrix products (`learned.lstm_fast.lstm_step`).
      batches: the minibatch of each step, drawn beforehand; None draws them from `generator`.

    Returns:
      (meta_loss, carry, losses): `meta_loss` is the weighted sum over steps of the mean loss
      (or log loss) over problems (so that the meta-gradient is an average over problems);
      `losses` holds the detached per-problem losses after each step, shape [steps, num_problems].
    """
    params, grads, state, step, initial_losses = carry
    shape = params.shape
    meta_loss = params.new_zeros(())
    history = []
    lstm_step = step_function(compile)
    for t in range(steps):
        updates, state = lstm_step(meta_params, grads.reshape(-1), state, config, matmul_dtype)
        params = params + updates.view(shape)
        batch = task.sample_batch(generator) if batches is None else batches[t]
        losses, grads = loss_and_grad(task, params, batch, second_order)
        weight = 1.0 if weights is None else weights[t]
        terms = meta_objective_terms(losses, initial_losses, loss_clip, log_loss)
        meta_loss = meta_loss + weight * terms.mean()
        history.append(losses.detach())
    return meta_loss, Carry(params, grads, state, step + steps, initial_losses), torch.stack(history)
