"""Truncated backpropagation through time: the paper's meta-gradient estimator.

Given the meta-parameters and where the optimizee stands (a `Carry`), unroll the learned
optimizer for one truncation, backpropagate the truncation's meta-loss into the meta-parameters,
and hand the detached carry to the next truncation: gradients never flow across a truncation
boundary, which keeps memory bounded and biases the estimate toward short horizons.

With `runtime.recompute_every`, the truncation runs first without a graph, then segment by
segment again with one, last segment first, each differentiated as it goes: the same
meta-gradient to rounding, for the memory of one segment's graph. (`torch.utils.checkpoint`
around each segment computes the same, but the optimizee's own gradients inside the segment
make it hold and recompute far more: with second-order meta-gradients it took 2.2 times the
time and 4 times the memory of these segments, and with first-order 100-step truncations it ran
out of 24 GB; benchmarks/recompute.py, BENCHMARKS.md.)

References: Andrychowicz et al. 2016, section 2 and Figure 2; Williams and Peng 1990 for
truncated BPTT.
"""

from __future__ import annotations

import torch

from optimizer3.learned.lstm import LSTMState, MetaParams
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
    if 0 < runtime.recompute_every < len(weights):
        return _segmented_meta_gradient(meta_params, config, runtime, task, carry, generator, weights)
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


def _segmented_meta_gradient(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    runtime: RuntimeConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator | None,
    weights: torch.Tensor,
) -> tuple[float, Carry]:
    """`meta_gradient` holding the graph of `runtime.recompute_every` steps at a time.

    The truncation first runs without a graph, keeping where each segment starts (its carry and
    its minibatches). Then, last segment first, each segment runs again with a graph and is
    differentiated: its own meta-loss, plus the gradient that the later segments' meta-loss
    sends back into its end (their parameters and LSTM state), which gives the gradient to its
    start for the segment before it. The sum is the truncation's meta-gradient.
    """
    segment, second_order = runtime.recompute_every, config.second_order
    starts = []
    with torch.no_grad():
        for begin in range(0, len(weights), segment):
            window = weights[begin : begin + segment]
            batches = [task.sample_batch(generator) for _ in range(len(window))]
            starts.append((window, carry, batches))
            _, carry = run_truncation(meta_params, config, runtime, task, carry, None, window, batches)
    total, adjoint = 0.0, None
    for number, (window, start, batches) in reversed(list(enumerate(starts))):
        leaves = [tensor.detach().requires_grad_(number > 0) for tensor in _carried(start, second_order)]
        meta_loss, end = run_truncation(meta_params, config, runtime, task, _with_carried(start, leaves, second_order),
                                        None, window, batches)
        outputs, grads = [meta_loss], [torch.ones_like(meta_loss)]
        if adjoint is not None:
            pairs = [(out, grad) for out, grad in zip(_carried(end, second_order), adjoint)
                     if grad is not None and out.requires_grad]
            outputs += [out for out, _ in pairs]
            grads += [grad for _, grad in pairs]
        if any(output.requires_grad for output in outputs):
            torch.autograd.backward(outputs, grads)
        adjoint = [leaf.grad for leaf in leaves]
        total += float(meta_loss.detach())
    return total, carry.detach()


def _carried(carry: Carry, second_order: bool) -> list[torch.Tensor]:
    """The tensors of a carry that the meta-gradient flows through: the parameters and the
    LSTM's hidden and cell state, and with second-order meta-gradients also the optimizee's
    gradient and its moving averages (constants of the meta-graph otherwise)."""
    tensors = [carry.params, *carry.state.h, *carry.state.c]
    if second_order:
        tensors.append(carry.grads)
        if carry.state.momentum is not None:
            tensors.append(carry.state.momentum)
    return tensors


def _with_carried(carry: Carry, tensors: list[torch.Tensor], second_order: bool) -> Carry:
    """`carry` with the tensors of `_carried` replaced, in the same order."""
    layers = len(carry.state.h)
    h, c = tuple(tensors[1 : 1 + layers]), tuple(tensors[1 + layers : 1 + 2 * layers])
    grads, momentum = carry.grads, carry.state.momentum
    if second_order:
        grads = tensors[1 + 2 * layers]
        if momentum is not None:
            momentum = tensors[2 + 2 * layers]
    return carry._replace(params=tensors[0], grads=grads, state=LSTMState(h, c, momentum))
