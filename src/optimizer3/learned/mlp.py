"""A per-parameter MLP optimizer over normalized features: the second architecture.

Each coordinate's update comes from a tiny MLP (two hidden layers of 8 units, as in Celo2)
shared by every coordinate, that reads features which do not change when the loss is rescaled:

- the gradient and its moving averages at three timescales (decays 0.5, 0.9, 0.99), each
  divided by the root of Adam's bias-corrected second moment (decay 0.999): Adam's own ratio
  m/sqrt(v) at several momenta (Metz et al. 2022, section 3);
- the decay-0.9 average divided by Adafactor's factored second moment (row and column means of
  g^2 of a matrix, Shazeer and Stern 2018), which tells a coordinate how its row and column
  compare with the whole tensor;
- the gradient and the parameter, each divided by its root mean square over the tensor.

The output d is the MLP's plus a linear skip from the features, which starts as 1 x the 0.9
average's Adam ratio, so that a new optimizer begins as Adam (beta1 0.9, beta2 0.999) and
meta-training only has to improve on it. The update is capped at root mean square `update_cap`
(10) over each tensor of each problem, so that a blown-up output cannot throw a tensor further
than ten times the step size, and scaled by the learned step size exp(log_lr):

    delta = -exp(log_lr) * d / max(1, rms(d) / update_cap)

Because every feature is a ratio of gradient statistics, multiplying the loss by any positive
constant leaves the update unchanged (up to Adam's epsilon); multiplying a parameter tensor by c
changes its features only through the parameter feature, which is normalized per tensor.

The step works on one parameter tensor at a time, for a batch of problems of the same shape:
gradients [batch, rows, cols] (a vector is one row, a convolution kernel flattened after its
first dimension). The meta-parameters are either one set for every problem or one set per
problem (a leading batch dimension): meta-training by evolution strategies runs every
perturbed optimizer of a meta-batch in one call.

References: Metz et al. 2022, "Practical tradeoffs between memory, compute, and performance in
learned optimizers"; Moudgil et al. 2025 (Celo) and Moudgil, Knyazev and Belilovsky 2026 (Celo2)
for the small normalized MLP; Kingma and Ba 2015 (Adam); Shazeer and Stern 2018 (Adafactor).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch

from optimizer3.configs import field
from optimizer3.errors import UsageError

MetaParams = dict[str, torch.Tensor]
FEATURES = ("g/sqrt(v)", "m0.5/sqrt(v)", "m0.9/sqrt(v)", "m0.99/sqrt(v)", "m0.9/sqrt(v_factored)",
            "g/rms(g)", "p/rms(p)")
SKIP_START = FEATURES.index("m0.9/sqrt(v)")  # the feature the skip starts from: Adam's ratio
# Every feature is clipped to [-10, 10]. g/sqrt(v) can reach 1/sqrt(1 - 0.999) = 31.6 on a first
# large gradient, but Adam's own ratio for decay 0.9 stays below 0.1/sqrt(0.001 x 0.19) = 7.3
# after bias correction, so the start as Adam is unaffected.
FEATURE_CLIP = 10.0


@dataclasses.dataclass(frozen=True)
class MLPOptimizerConfig:
    """Architecture of the per-parameter MLP optimizer."""

    hidden_sizes: tuple[int, ...] = field((8, 8), "units of each hidden layer of the MLP", type=int)
    momentum_decays: tuple[float, ...] = field(
        (0.5, 0.9, 0.99), "decays of the gradient's moving averages that the MLP sees", type=float)
    second_moment_decay: float = field(0.999, "decay of the second moment that normalizes them")
    epsilon: float = field(1e-8, "added to the root of the second moment, as Adam adds it")
    update_cap: float = field(10.0, "largest root mean square of the update d over a tensor")
    initial_lr: float = field(0.02, "exp(log_lr) of new meta-parameters: the step size Adam starts with")

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        object.__setattr__(self, "momentum_decays", tuple(float(d) for d in self.momentum_decays))
        if not self.hidden_sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1
                                        for h in self.hidden_sizes):
            raise UsageError(f"Invalid hidden_sizes: {self.hidden_sizes}; give one or more positive integers")
        if self.momentum_decays != (0.5, 0.9, 0.99):
            raise UsageError(f"Invalid momentum_decays: {self.momentum_decays}; this architecture's features "
                             "are built on 0.5 0.9 0.99: leave the flag out")
        if not 0 < self.second_moment_decay < 1:
            raise UsageError(f"Invalid second_moment_decay: {self.second_moment_decay}; use a number in (0, 1)")
        for name in ("epsilon", "update_cap", "initial_lr"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise UsageError(f"Invalid {name}: {value!r}; use a positive number")


class MLPState(NamedTuple):
    """One tensor's optimizer state for a batch of problems.

    momentum: [averages, batch, rows, cols], the moving averages of the gradient (not bias
    corrected); second: [batch, rows, cols], the moving average of g^2; row and col: [batch,
    rows] and [batch, cols], the moving averages of g^2's row and column means; step: the steps
    taken so far.
    """

    momentum: torch.Tensor
    second: torch.Tensor
    row: torch.Tensor
    col: torch.Tensor
    step: int


def matrix_shape(shape: tuple[int, ...] | torch.Size) -> tuple[int, int]:
    """The (rows, cols) that a parameter of `shape` is seen as: a vector (or scalar) is one row,
    a tensor of more dimensions is flattened after its first."""
    if len(shape) <= 1:
        return 1, math.prod(shape)
    return shape[0], math.prod(shape[1:])


def init_state(config: MLPOptimizerConfig, batch: int, rows: int, cols: int, dtype=torch.float32,
               device: torch.device | str = "cpu") -> MLPState:
    """Zero state for `batch` problems' tensors of shape (rows, cols)."""
    def zeros(*shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=dtype, device=device)
    return MLPState(zeros(len(config.momentum_decays), batch, rows, cols), zeros(batch, rows, cols),
                    zeros(batch, rows), zeros(batch, cols), 0)


def meta_param_shapes(config: MLPOptimizerConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every meta-parameter (one set, without a batch dimension)."""
    sizes = (len(FEATURES), *config.hidden_sizes, 1)
    shapes: dict[str, tuple[int, ...]] = {}
    for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"weight{layer}"] = (fan_in, fan_out)
        shapes[f"bias{layer}"] = (fan_out,)
    shapes["skip"] = (len(FEATURES),)
    shapes["log_lr"] = ()
    return shapes


def init_meta_params(config: MLPOptimizerConfig, generator: torch.Generator | None = None) -> MetaParams:
    """Meta-parameters that start as Adam at `config.initial_lr`: hidden layers drawn as
    torch.nn.Linear draws them, a zero output layer, the skip on Adam's ratio."""
    meta_params = {}
    for name, shape in meta_param_shapes(config).items():
        if name.startswith("weight") or name.startswith("bias"):
            fan_in = shape[0] if name.startswith("weight") else meta_param_shapes(config)[
                name.replace("bias", "weight")][0]
            bound = 1.0 / math.sqrt(fan_in)
            meta_params[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        elif name == "skip":
            meta_params[name] = torch.zeros(shape)
            meta_params[name][SKIP_START] = 1.0
        else:
            meta_params[name] = torch.tensor(math.log(config.initial_lr))
    last = len(config.hidden_sizes)
    meta_params[f"weight{last}"].zero_()
    meta_params[f"bias{last}"].zero_()
    return meta_params


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root mean square over each problem's tensor, shape [batch, 1, 1]."""
    return x.square().mean(dim=(1, 2), keepdim=True).sqrt()


def advance(config: MLPOptimizerConfig, grads: torch.Tensor, state: MLPState) -> MLPState:
    """The state after the gradients `grads` [batch, rows, cols]: every moving average moved on."""
    decays = torch.tensor(config.momentum_decays, dtype=grads.dtype, device=grads.device).view(-1, 1, 1, 1)
    momentum = state.momentum * decays + (1 - decays) * grads
    beta2 = config.second_moment_decay
    square = grads.square()
    second = state.second * beta2 + (1 - beta2) * square
    row = state.row * beta2 + (1 - beta2) * square.mean(dim=2)
    col = state.col * beta2 + (1 - beta2) * square.mean(dim=1)
    return MLPState(momentum, second, row, col, state.step + 1)


def _feature_inputs(config: MLPOptimizerConfig, params: torch.Tensor, grads: torch.Tensor, new: MLPState) -> dict:
    """What the features are made of, as [batch, coordinates] views, and the per-tensor scales."""
    batch = grads.shape[0]
    # Adafactor's estimate of v: the outer product of row and column means over their mean.
    factored = new.row.unsqueeze(2) * new.col.unsqueeze(1) / new.row.mean(dim=1, keepdim=True).unsqueeze(2).clamp_min(1e-30)
    return {
        "grads": grads.reshape(batch, -1), "params": params.reshape(batch, -1),
        "momentum": new.momentum.reshape(len(config.momentum_decays), batch, -1),
        "second": new.second.reshape(batch, -1), "factored": factored.reshape(batch, -1),
        "grad_scale": (_rms(grads) + 1e-30).reciprocal().view(batch, 1),
        "param_scale": (_rms(params) + 1e-30).reciprocal().view(batch, 1),
        "corrections": [1 - decay**new.step for decay in config.momentum_decays],
        "correction2": 1 - config.second_moment_decay**new.step,
    }


def _block_features(config: MLPOptimizerConfig, inputs: dict, block: slice) -> torch.Tensor:
    """The features of the coordinates `block`, feature-major: [batch, len(FEATURES), coordinates]
    (each feature one contiguous row, which the MLP's matrix products read fastest)."""
    grads = inputs["grads"][:, block]
    inverse = (inputs["second"][:, block] / inputs["correction2"]).sqrt_().add_(config.epsilon).reciprocal_()
    inverse_factored = (inputs["factored"][:, block] / inputs["correction2"]).sqrt_().add_(config.epsilon).reciprocal_()
    x = torch.empty(grads.shape[0], len(FEATURES), grads.shape[1], dtype=grads.dtype, device=grads.device)
    torch.mul(grads, inverse, out=x[:, 0])
    momentum, corrections = inputs["momentum"], inputs["corrections"]
    for k, correction in enumerate(corrections):
        torch.mul(momentum[k, :, block], inverse / correction, out=x[:, 1 + k])
    torch.mul(momentum[1, :, block], inverse_factored / corrections[1], out=x[:, 1 + len(corrections)])
    torch.mul(grads, inputs["grad_scale"], out=x[:, -2])
    torch.mul(inputs["params"][:, block], inputs["param_scale"], out=x[:, -1])
    return x.clamp_(-FEATURE_CLIP, FEATURE_CLIP)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Feature-major x [batch, in, n] through one weight [in, out] or one per problem [batch, in,
    out], plus bias: [batch, out, n]."""
    if weight.dim() == 3:
        return torch.baddbmm(bias.unsqueeze(-1), weight.transpose(1, 2), x)
    if x.shape[0] == 1:
        return torch.addmm(bias.unsqueeze(-1), weight.t(), x[0]).unsqueeze(0)
    return torch.matmul(weight.t(), x).add_(bias.unsqueeze(-1))


def _direction(meta_params: MetaParams, x: torch.Tensor, config: MLPOptimizerConfig) -> torch.Tensor:
    """The MLP's output plus the skip, [batch, n], from features [batch, len(FEATURES), n]."""
    hidden = x
    layers = len(config.hidden_sizes)
    for layer in range(layers):
        hidden = _linear(hidden, meta_params[f"weight{layer}"], meta_params[f"bias{layer}"]).relu_()
    out = _linear(hidden, meta_params[f"weight{layers}"], meta_params[f"bias{layers}"])
    skip = meta_params["skip"]  # [F] or [batch, F]
    return out.add_(torch.matmul(skip.unsqueeze(-2), x)).squeeze(1)


# Coordinates (of all problems together) per block of the MLP: a block's hidden activations
# stay in the cache instead of streaming through memory, which made a one-million-parameter
# step 2 times faster on a 2-core AMD EPYC (benchmarks/iteration_cost.py).
BLOCK = 1 << 15


def mlp_step(meta_params: MetaParams, params: torch.Tensor, grads: torch.Tensor, state: MLPState,
             config: MLPOptimizerConfig) -> tuple[torch.Tensor, MLPState]:
    """The update of one tensor of a batch of problems, and the advanced state.

    Args:
      meta_params: the MLP's weights, one set (shapes `meta_param_shapes`) or one per problem
        (each with a leading dimension of size batch).
      params, grads: [batch, rows, cols], the parameters before the step and their gradients.
      state: this tensor's `MLPState`.

    Returns: the update to add to `params`, [batch, rows, cols], and the new state.
    """
    new_state = advance(config, grads, state)
    inputs = _feature_inputs(config, params, grads, new_state)
    batch, coordinates = inputs["grads"].shape
    direction = torch.empty_like(inputs["grads"])
    width = max(1, BLOCK // batch)
    for begin in range(0, coordinates, width):
        block = slice(begin, begin + width)
        direction[:, block] = _direction(meta_params, _block_features(config, inputs, block), config)
    direction = direction.view_as(grads)
    cap = (_rms(direction) / config.update_cap).clamp_min(1.0)
    lr = meta_params["log_lr"].exp().view(-1, 1, 1)
    return direction * (-lr / cap), new_state
