"""Truncated backpropagation through time: the paper's meta-gradient estimator.

Given the meta-parameters and where the optimizee stands (a `Carry`), unroll the learned
optimizer for one truncation, backpropagate the truncation's meta-loss into the meta-parameters,
and hand the detached carry to the next truncation: gradients never flow across a truncation
boundary, which keeps memory bounded and biases the estimate toward short horizons.

With `runtime.recompute_every`, the truncation runs in segments under
`torch.utils.checkpoint`: each segment's forward keeps no graph, and the backward runs it again
for its share of the meta-gradient (the same meta-gradient to rounding, for the memory of one
segment's graph).

References: Andrychowicz et al. 2016, section 2 and Figure 2; Williams and Peng 1990 for
truncated BPTT.
"""

from __future__ import annotations

import torch
import torch.utils.checkpoint

from optimizer3.learned.lstm import MetaParams
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.unroll import Carry, unroll
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import Task


def meta_gradient(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    runtime: RuntimeConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator | None,
    weights: torch.Tensor,
) -> tuple[float, Carry]:
    """Unroll one truncation of `len(weights)` steps and leave d(meta-loss)/d(meta-params) in
    each meta-parameter's `.grad`.

    Returns the meta-loss and the carry, detached: this is the truncation boundary.
    """
    for tensor in meta_params.values():
        tensor.grad = None
    segment = runtime.recompute_every
    if 0 < segment < len(weights):
        meta_loss, carry = _recomputed_unroll(meta_params, config, runtime, task, carry, generator, weights)
    else:
        meta_loss, carry = run_truncation(meta_params, config, runtime, task, carry, generator, weights)
    if meta_loss.requires_grad:
        meta_loss.backward()
    return float(meta_loss.detach()), carry.detach()


def run_truncation(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    runtime: RuntimeConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator | None,
    weights: torch.Tensor,
    batches: list | None = None,
) -> tuple[torch.Tensor, Carry]:
    """`unroll` for as many steps as `weights` has, with the experiment's and the runtime's
    settings: the meta-loss and the carry after it (both in the meta-graph, if one is kept)."""
    meta_loss, carry, _ = unroll(
        meta_params, config.optimizer, task, carry, len(weights), generator,
        weights=weights, second_order=config.second_order, loss_clip=config.loss_clip,
        log_loss=config.meta_objective == "log_loss", compile=runtime.compile,
        matmul_dtype=runtime.matmul_dtype, batches=batches,
    )
    return meta_loss, carry


def _recomputed_unroll(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    runtime: RuntimeConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator | None,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, Carry]:
    """`run_truncation` in segments of `runtime.recompute_every` steps, each checkpointed.

    A segment's minibatches are drawn before it runs, in the order `unroll` draws them, so that
    its recomputation in the backward sees the same ones and the generator ends where an
    unsegmented truncation leaves it.
    """
    meta_loss = None
    for begin in range(0, len(weights), runtime.recompute_every):
        window = weights[begin : begin + runtime.recompute_every]
        batches = [task.sample_batch(generator) for _ in range(len(window))]
        loss, carry = torch.utils.checkpoint.checkpoint(
            run_truncation, meta_params, config, runtime, task, carry, None, window, batches,
            use_reentrant=False,
        )
        meta_loss = loss if meta_loss is None else meta_loss + loss
    return meta_loss, carry
