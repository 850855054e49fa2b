"""The coordinatewise LSTM's step, computed fast: what meta-training and `LearnedOptimizer` call.

It computes `learned.lstm.reference_step` (the paper's equations), rearranged for speed, and
a test holds the two equal to 1e-12 in float64 and to float32 rounding (1e-5 relative, 1e-6
absolute on the state; tests/test_lstm.py):

- tanh(z) = 2 sigmoid(2z) - 1: doubling the cell candidate's weights and bias lets one sigmoid
  cover all four gates; torch's CPU sigmoid is several times faster than its tanh, and the
  element-wise work, not the matrix products, bounds this step. (Doubling is exact in floating
  point.)
- Work in place where autograd allows, and add the bias into the product, not from a fresh
  broadcast (torch's eager CPU kernels are several times slower at the latter).
- Optionally compute the matrix products in bfloat16 (`matmul_dtype`), and optionally run
  through `torch.compile`, keeping the sigmoids for the backward (`step_function`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import torch
import torch.utils.checkpoint

from optimizer3.learned.features import constant, encode_features, gradient_features
from optimizer3.learned.lstm import LSTMOptimizerConfig, LSTMState, MetaParams, output_update

LOW_PRECISION = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _candidate_doubler(hidden: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, ..., 1, 2, ..., 2]: 3 * hidden ones (the gates), hidden twos (the cell candidate)."""
    return constant((1.0,) * (3 * hidden) + (2.0,) * hidden, dtype, device)


def lstm_step(
    meta_params: MetaParams,
    grads: torch.Tensor,
    state: LSTMState,
    config: LSTMOptimizerConfig,
    matmul_dtype: str = "float32",
) -> tuple[torch.Tensor, LSTMState]:
    """`reference_step`, fast: the update of every coordinate and the new state.

    Args:
      meta_params: the LSTM's weights, as made by `init_meta_params`.
      grads: the optimizee's gradients, one per coordinate, shape [rows].
      state: the recurrent state of every coordinate (`init_state`).
      config: the architecture.
      matmul_dtype: the dtype of the LSTM layers' matrix products: with bfloat16 the operands
        are rounded to it and each product, summed in float32, is rounded to it once before it
        returns to the gradients' dtype, in which the state and all element-wise work stay.

    Returns:
      (updates, new_state): `updates` has shape [rows] and is added to the parameters.
    """
    hidden = config.hidden_size
    features, momentum = gradient_features(grads, state.momentum, config)
    x = encode_features(features, config)
    doubled = _candidate_doubler(hidden, x.dtype, x.device)
    new_h, new_c = [], []
    for layer in range(config.layers):
        inputs = torch.cat((x, state.h[layer]), dim=0)
        weight, bias = meta_params[f"lstm.{layer}.weight"] * doubled, meta_params[f"lstm.{layer}.bias"] * doubled
        gates = _gate_inputs(bias, inputs, weight, matmul_dtype)
        gates = gates.sigmoid() if torch.compiler.is_compiling() else gates.sigmoid_()
        input_gate, forget_gate, output_gate, candidate = gates.chunk(4, dim=0)
        cell = torch.addcmul(forget_gate * state.c[layer], input_gate, candidate * 2.0 - 1.0)
        x = output_gate * ((cell * 2.0).sigmoid() * 2.0 - 1.0)
        new_h.append(x)
        new_c.append(cell)
    out = torch.addmm(meta_params["output.bias"].unsqueeze(1), meta_params["output.weight"].t(), x)
    return output_update(out, features, momentum, config), LSTMState(tuple(new_h), tuple(new_c), momentum)


def _gate_inputs(bias: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, matmul_dtype: str) -> torch.Tensor:
    """The gates' pre-activations `bias + weight.T @ inputs` for `inputs` [fan_in, n], in the
    inputs' dtype, the product computed in `matmul_dtype`.

    The bias is added after the product, in the inputs' dtype (in place when eager; out of place
    when compiled, where it makes no difference and in place would break `_compiled_lstm_step`'s
    checkpointing). CPU BLAS multiplied [units, fan_in] by [fan_in, n] faster with the first
    factor contiguous than as a transposed view of the stored weight.
    """
    low = LOW_PRECISION[matmul_dtype]
    if matmul_dtype == "float32" or low == inputs.dtype:
        product = torch.mm(weight.t().contiguous(), inputs)
    else:
        product = torch.mm(weight.t().contiguous().to(low), inputs.to(low)).to(inputs.dtype)
    bias = bias.unsqueeze(1)
    return product + bias if torch.compiler.is_compiling() else product.add_(bias)


StepFunction = Callable[..., tuple[torch.Tensor, LSTMState]]


def step_function(compiled: bool = False) -> StepFunction:
    """`lstm_step`, or with `compiled` the same function compiled by `torch.compile`.

    Compiling (TorchInductor) fuses the step's element-wise passes into a few loops, saving
    their memory traffic but not their exponentials (BENCHMARKS.md, "The learned optimizer's step against Adam"); in
    meta-training the compiled step also keeps its sigmoids for the backward. It needs a C++
    compiler on CPU, the first calls of each kind (with or without autograd, new shapes) take
    seconds to a minute to compile, and the results equal the eager step's to floating-point
    rounding, not bit for bit.
    """
    return _compiled_lstm_step() if compiled else lstm_step


@functools.cache
def _compiled_lstm_step() -> StepFunction:
    # torch warns once that a checkpointed region with a policy must not hold in-place ops;
    # under torch.compile this one has none (`_gate_inputs`, `lstm_step`).
    logging.getLogger("torch._higher_order_ops.wrap").addFilter(
        lambda record: "context_fn is passed to torch.utils.checkpoint" not in record.getMessage())
    return torch.compile(_lstm_step_saving_sigmoids)


def _lstm_step_saving_sigmoids(*args):
    """`lstm_step`, telling `torch.compile` to keep every sigmoid's output for the backward.

    Left to itself, its partitioner keeps the (half-size, bfloat16) matrix products and
    recomputes the sigmoids from them in the backward, where on CPU the exponentials, not
    memory traffic, are the cost. Keeping them made meta-training with bfloat16 products 17% to
    26% faster in one process (float32: no change), for 28% to 54% more peak memory
    (BENCHMARKS.md). Selective activation checkpointing is PyTorch's interface for that choice:
    sigmoids MUST_SAVE, everything else left to the partitioner (PREFER_SAVE).
    """
    if not (torch.is_grad_enabled() and torch.compiler.is_compiling()):
        # No meta-graph, or run eagerly (torch.compile falls back to that past its recompile
        # limit), where the checkpoint would conflict with `lstm_step`'s in-place operations.
        return lstm_step(*args)
    return torch.utils.checkpoint.checkpoint(
        lstm_step, *args, use_reentrant=False,
        context_fn=functools.partial(torch.utils.checkpoint.create_selective_checkpoint_contexts,
                                     _save_sigmoids),
    )


def _save_sigmoids(context, op, *args, **kwargs) -> torch.utils.checkpoint.CheckpointPolicy:
    # Only ever traced under torch.compile, where `lstm_step`'s sigmoids are all out of place.
    policy = torch.utils.checkpoint.CheckpointPolicy
    return policy.MUST_SAVE if op is torch.ops.aten.sigmoid.default else policy.PREFER_SAVE
