"""The coordinatewise LSTM optimizer of Andrychowicz et al. (2016), written as the paper writes it.

One small LSTM m, with weights φ shared by every coordinate, reads each coordinate's gradient
and proposes its update; every coordinate i keeps its own recurrent state h^i (section 2.1):

    g_t^i, h_{t+1}^i = m(∇_t^i, h_t^i, φ)            θ_{t+1} = θ_t + g_t

`reference_step` below is that update for every coordinate at once, line by line with the
equations. `learned.lstm_fast.lstm_step` computes the same function faster; everything else
(meta-training, `LearnedOptimizer`) calls the fast one, and a test holds the two together.

Layout: the state of n coordinates is one `[hidden, n]` tensor per layer for h and for c (one
column per coordinate, `LSTMState`), and the meta-parameters are a dict of tensors
(`meta_param_shapes`).

References: Andrychowicz et al. 2016, section 2.1, Figure 3 and Appendix A; Hochreiter and
Schmidhuber 1997 for the LSTM cell.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch

from optimizer3.configs import field
from optimizer3.errors import UsageError
from optimizer3.learned.features import PREPROCESSINGS, encode_features, gradient_features, input_size, mix_rms

MetaParams = dict[str, torch.Tensor]
OUTPUT_INITS = ("uniform", "zeros")
UPDATE_FORMS = ("linear", "direction_magnitude", "gradient_mix")
# log/sign preprocessing multiplies small gradients by e^p and compares with e^-p: both must be
# normal float32 numbers (e^88.7 overflows it).
MAX_PREPROCESS_P = 80.0


@dataclasses.dataclass(frozen=True)
class LSTMOptimizerConfig:
    """Architecture of the coordinatewise LSTM optimizer."""

    layers: int = field(2, "number of stacked LSTM layers")
    hidden_size: int = field(20, "units per LSTM layer")
    preprocessing: str = field(
        "none", "gradient encoding: none (raw gradients) or log_sign (the paper's Appendix A)",
        choices=PREPROCESSINGS)
    preprocess_p: float = field(10.0, "the p of log_sign preprocessing")
    output_scale: float = field(
        0.1, "the update (with --update-form gradient_mix, its bias term b) is multiplied by this")
    output_init: str = field(
        "uniform", "initial output layer: uniform (like torch.nn.Linear) or zeros (the optimizer "
        "starts by not moving, which keeps an MLP's sigmoid units from saturating)",
        choices=OUTPUT_INITS)
    output_bias: tuple[float, ...] = field(
        (), "initial output-layer bias, one value per output, in place of --output-init's; with "
        "--output-init zeros the optimizer starts as the fixed update these make (a warm start). "
        "With gradient_mix the outputs are b, then a_j for the gradient and each moving average: "
        "torch's NAG at learning rate lr with momentum mu is a_g = -lr / mix_scale and "
        "a_mu = -lr mu / ((1 - mu) mix_scale), so 0 -0.1 0 -0.9 0 with --momentum-inputs "
        "0.5 0.9 0.99 starts as NAG at lr 1", type=float)
    update_form: str = field(
        "linear", "how the output layer makes the update: linear (the paper: output_scale * "
        "(w.h + b)), direction_magnitude (output_scale * d * exp(m), d and m two outputs, so the "
        "step size can follow the gradient's scale) or gradient_mix (output_scale * b + mix_scale "
        "* sum_j a_j v_j: b and every a_j outputs, v_j the raw gradient and each moving average "
        "of --momentum-inputs, so a step can be proportional to the gradient as SGD's is)",
        choices=UPDATE_FORMS)
    mix_scale: float = field(
        10.0, "gradient_mix: the coefficients a_j are multiplied by this, so that an output "
        "a_j = -1 steps mix_scale times v_j downhill")
    mix_rms_decay: float = field(
        0.0, "gradient_mix: a decay in (0, 1) divides every raw feature v_j by the root of a "
        "bias-corrected moving average of g^2 with this decay, as Adam divides its momentum, so "
        "that the mix does not depend on the gradient's scale; 0: raw features")
    momentum_inputs: tuple[float, ...] = field(
        (), "decay rates of moving averages of the gradient that the LSTM sees beside the "
        "gradient, each encoded like it (e.g. 0.5 0.9 0.99; none: the paper's inputs)", type=float)
    momentum_bias_correction: bool = field(
        False, "divide each moving average by 1 - decay^t, as Adam does, so that young averages "
        "are not biased toward zero (needs --momentum-inputs)")

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise UsageError(f"Invalid number of LSTM layers: {self.layers}; use 1 or more")
        if self.hidden_size < 1:
            raise UsageError(f"Invalid LSTM hidden size: {self.hidden_size}; use 1 or more")
        input_size(self.preprocessing)
        if not 0 < self.preprocess_p <= MAX_PREPROCESS_P:
            raise UsageError(f"Invalid preprocess_p: {self.preprocess_p}; use a positive number up to "
                             f"{MAX_PREPROCESS_P} (e^p must fit in float32)")
        for name in ("output_scale", "mix_scale"):
            if not getattr(self, name) > 0:
                raise UsageError(f"Invalid {name}: {getattr(self, name)}; use a positive number")
        for name, choices in (("output_init", OUTPUT_INITS), ("update_form", UPDATE_FORMS)):
            if getattr(self, name) not in choices:
                raise UsageError(f"Unknown {name}: {getattr(self, name)!r}; choose one of {', '.join(choices)}")
        self._check_outputs()
        self._check_averages()

    def _check_outputs(self) -> None:
        if self.output_bias and len(self.output_bias) != output_count(self):
            raise UsageError(
                f"Invalid output_bias: {len(self.output_bias)} values for an output layer of "
                f"{output_count(self)} (update form {self.update_form} with {len(self.momentum_inputs)} "
                "moving averages); give one value per output")
        for value in self.output_bias:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"Invalid output_bias value: {value!r}; use finite numbers")
        object.__setattr__(self, "output_bias", tuple(float(v) for v in self.output_bias))

    def _check_averages(self) -> None:
        for decay in self.momentum_inputs:
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
                raise UsageError(f"Invalid momentum input decay: {decay!r}; use numbers in [0, 1), "
                                 "e.g. 0.5 0.9 0.99")
        # A tuple of floats whatever was given (a list, ints): configs compare equal and hash.
        object.__setattr__(self, "momentum_inputs", tuple(float(d) for d in self.momentum_inputs))
        if self.momentum_bias_correction and not self.momentum_inputs:
            raise UsageError("momentum_bias_correction needs moving averages: give --momentum-inputs too")
        if isinstance(self.mix_rms_decay, bool) or not 0 <= self.mix_rms_decay < 1:
            raise UsageError(f"Invalid mix_rms_decay: {self.mix_rms_decay!r}; use a number in [0, 1), e.g. 0.999")
        if self.mix_rms_decay and self.update_form != "gradient_mix":
            raise UsageError("mix_rms_decay scales the gradient_mix update: give --update-form gradient_mix too")

    @property
    def input_size(self) -> int:
        """LSTM inputs per coordinate: the encoded gradient and each encoded moving average."""
        return input_size(self.preprocessing) * (1 + len(self.momentum_inputs))

    @property
    def momentum_columns(self) -> int:
        """Per-coordinate state of the averages: each average, and with bias correction its
        weight 1 - decay^t too; with `mix_rms_decay`, then the average of g^2 and its weight."""
        averages = len(self.momentum_inputs) * (2 if self.momentum_bias_correction else 1)
        return averages + (2 if self.mix_rms_decay else 0)


class LSTMState(NamedTuple):
    """Per-coordinate recurrent state of n coordinates: one `[hidden, n]` tensor per layer for h
    and for c, and with `momentum_inputs` or `mix_rms_decay` the gradient's moving averages,
    `[momentum_columns, n]` (None without either).

    Units along the first axis and coordinates along the second (feature-major) make every
    element-wise loop of the step run along the coordinates in long vectors, instead of along
    20 units at a time.
    """

    h: tuple[torch.Tensor, ...]
    c: tuple[torch.Tensor, ...]
    momentum: torch.Tensor | None = None

    def detach(self) -> "LSTMState":
        momentum = None if self.momentum is None else self.momentum.detach()
        return LSTMState(tuple(t.detach() for t in self.h), tuple(t.detach() for t in self.c), momentum)


def output_count(config: LSTMOptimizerConfig) -> int:
    """Outputs of the output layer per coordinate. linear: the update. direction_magnitude:
    the direction d, then the log-magnitude m. gradient_mix: the bias b, then one coefficient
    per raw feature (the gradient, then each moving average)."""
    return {"linear": 1, "direction_magnitude": 2,
            "gradient_mix": 2 + len(config.momentum_inputs)}[config.update_form]


def meta_param_shapes(config: LSTMOptimizerConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every meta-parameter, in a fixed order.

    For a reader who knows `torch.nn.LSTM`: layer k's `lstm.k.weight` is `[inputs + hidden,
    4 * hidden]`, the transpose of torch's stacked input and recurrent weights; its gates are
    ordered (input, forget, output, cell), not torch's (input, forget, cell, output); and there
    is one bias per layer, not two.
    """
    hidden = config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    fan_in = config.input_size
    for layer in range(config.layers):
        shapes[f"lstm.{layer}.weight"] = (fan_in + hidden, 4 * hidden)
        shapes[f"lstm.{layer}.bias"] = (4 * hidden,)
        fan_in = hidden
    shapes["output.weight"] = (hidden, output_count(config))
    shapes["output.bias"] = (output_count(config),)
    return shapes


def init_meta_params(
    config: LSTMOptimizerConfig, generator: torch.Generator, dtype: torch.dtype = torch.float32
) -> MetaParams:
    """Fresh meta-parameters: uniform(±1/sqrt(hidden)) like torch.nn.LSTM, forget bias 1.

    The forget-gate bias starts at 1 so that the cell state is remembered by default, a common
    LSTM choice (Jozefowicz et al. 2015) that speeds up early meta-training. With
    `output_init="zeros"` the output layer starts at zero: the first updates are all zero
    instead of a random constant drift, which on MNIST saturates the optimizee's sigmoid units
    and leaves meta-training stuck at the chance-level loss. A given `output_bias` replaces the
    output layer's initial bias.
    """
    bound = 1.0 / math.sqrt(config.hidden_size)
    params: MetaParams = {}
    for name, shape in meta_param_shapes(config).items():
        tensor = torch.empty(shape, dtype=dtype).uniform_(-bound, bound, generator=generator)
        if name.startswith("lstm.") and name.endswith(".bias"):
            tensor[config.hidden_size : 2 * config.hidden_size] += 1.0
        if name.startswith("output.") and config.output_init == "zeros":
            tensor.zero_()
        if name == "output.bias" and config.output_bias:
            tensor.copy_(torch.tensor(config.output_bias, dtype=dtype))
        params[name] = tensor
    return params


def init_state(
    config: LSTMOptimizerConfig, rows: int, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LSTMState:
    """Zero hidden and cell state (and zero moving averages) for `rows` coordinates."""
    def zeros(units: int) -> torch.Tensor:
        return torch.zeros(units, rows, dtype=dtype, device=device)

    momentum = zeros(config.momentum_columns) if config.momentum_columns else None
    return LSTMState(tuple(zeros(config.hidden_size) for _ in range(config.layers)),
                     tuple(zeros(config.hidden_size) for _ in range(config.layers)), momentum)


def reference_step(
    meta_params: MetaParams, grads: torch.Tensor, state: LSTMState, config: LSTMOptimizerConfig
) -> tuple[torch.Tensor, LSTMState]:
    """One step of the learned optimizer for n coordinates, as the paper writes it.

    Args:
      meta_params: φ, as made by `init_meta_params`.
      grads: ∇_t, one gradient per coordinate, shape [n].
      state: every coordinate's h_t (and c_t, and moving averages), `init_state`.
      config: the architecture.

    Returns:
      (g_t, new_state): the update g_t, shape [n], which θ_t + g_t applies.
    """
    hidden = config.hidden_size
    # Appendix A: ∇ -> (log|∇| / p, sgn ∇) if |∇| >= e^-p, else (-1, e^p ∇); beside ∇, the
    # LSTM may also see moving averages of it (`momentum_inputs`), encoded the same way.
    features, momentum = gradient_features(grads, state.momentum, config)
    x = encode_features(features, config)  # [inputs, n]
    new_h, new_c = [], []
    for layer in range(config.layers):  # a stack of LSTM cells (the paper uses two)
        weight, bias = meta_params[f"lstm.{layer}.weight"], meta_params[f"lstm.{layer}.bias"]
        z = weight.t() @ torch.cat((x, state.h[layer])) + bias.unsqueeze(1)  # [4 * hidden, n]
        input_gate = torch.sigmoid(z[:hidden])                 # i = σ(W_i [x; h] + b_i)
        forget_gate = torch.sigmoid(z[hidden : 2 * hidden])    # f = σ(W_f [x; h] + b_f)
        output_gate = torch.sigmoid(z[2 * hidden : 3 * hidden])  # o = σ(W_o [x; h] + b_o)
        candidate = torch.tanh(z[3 * hidden :])                # c~ = tanh(W_c [x; h] + b_c)
        cell = forget_gate * state.c[layer] + input_gate * candidate  # c' = f c + i c~
        x = output_gate * torch.tanh(cell)                     # h' = o tanh(c')
        new_h.append(x)
        new_c.append(cell)
    # The output layer: g = output_scale * (w h + b) in the paper (output_scale 0.1).
    out = meta_params["output.weight"].t() @ x + meta_params["output.bias"].unsqueeze(1)
    return output_update(out, features, momentum, config), LSTMState(tuple(new_h), tuple(new_c), momentum)


def output_update(
    out: torch.Tensor, features: torch.Tensor, momentum: torch.Tensor | None, config: LSTMOptimizerConfig
) -> torch.Tensor:
    """The update [n] that the output layer's values `out` [outputs, n] make (`update_form`)."""
    if config.update_form == "direction_magnitude":
        # The step's size is exp of a linear function of h: with log-encoded gradients it can
        # be a power of |g|, where the linear form is at best linear in log|g|.
        return out[0] * out[1].exp() * config.output_scale
    if config.update_form == "gradient_mix":
        # A per-coordinate, per-step learned combination of the raw gradient and its averages:
        # constant coefficients make SGD or heavy-ball momentum, so the step can grow with the
        # gradient the way NAG's does.
        mixed = features / mix_rms(momentum) if config.mix_rms_decay else features
        return out[0] * config.output_scale + (out[1:] * mixed).sum(dim=0) * config.mix_scale
    return out.squeeze(0) * config.output_scale
