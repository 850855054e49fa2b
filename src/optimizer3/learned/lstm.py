"""The coordinatewise deep LSTM optimizer as pure functions.

One set of weights is shared by every coordinate; every coordinate has its own hidden state,
one column of a `[hidden, n]` tensor (`LSTMState`). `lstm_step` is the single implementation of the update
rule: the meta-trainer, the evaluator and the `torch.optim` adapter all call it.

References: Andrychowicz et al. 2016, section 2.1 and Figure 3.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.utils.checkpoint

from optimizer3.errors import UsageError

from optimizer3.learned.preprocess import PREPROCESSINGS, input_size, preprocess

MetaParams = dict[str, torch.Tensor]
OUTPUT_INITS = ("uniform", "zeros")
UPDATE_FORMS = ("linear", "direction_magnitude", "gradient_mix")
# The dtypes that the LSTM's matrix products may be computed in (`lstm_step`).
MATMUL_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# log/sign preprocessing multiplies small gradients by e^p and compares with e^-p: both must be
# normal float32 numbers (e^88.7 overflows it).
MAX_PREPROCESS_P = 80.0


@dataclasses.dataclass(frozen=True)
class LSTMOptimizerConfig:
    """Architecture of the coordinatewise LSTM optimizer."""

    layers: int = dataclasses.field(default=2, metadata={"help": "number of stacked LSTM layers"})
    hidden_size: int = dataclasses.field(default=20, metadata={"help": "units per LSTM layer"})
    preprocessing: str = dataclasses.field(
        default="none",
        metadata={"help": "gradient encoding: none (raw gradients) or log_sign (Appendix A)",
                  "choices": PREPROCESSINGS},
    )
    preprocess_p: float = dataclasses.field(
        default=10.0, metadata={"help": "the p of log_sign preprocessing"}
    )
    output_scale: float = dataclasses.field(
        default=0.1, metadata={"help": "the update (see --update-form; with gradient_mix, its "
                                    "bias term b) is multiplied by this"}
    )
    output_init: str = dataclasses.field(
        default="uniform",
        metadata={"help": "initial output layer: uniform (like torch.nn.Linear) or zeros "
                  "(the optimizer starts by not moving; needed for MNIST)",
                  "choices": OUTPUT_INITS},
    )
    output_bias: tuple[float, ...] = dataclasses.field(
        default=(),
        metadata={"help": "initial output-layer bias, one value per output, in place of "
                  "--output-init's; with --output-init zeros the optimizer starts as the fixed "
                  "update these make. With gradient_mix the outputs are b, then a_j for the "
                  "gradient and each moving average: torch's NAG at learning rate lr with momentum "
                  "mu is a_g = -lr / mix_scale and a_mu = -lr mu / ((1 - mu) mix_scale), so 0 -0.1 "
                  "0 -0.9 0 with --momentum-inputs 0.5 0.9 0.99 starts as NAG at lr 1 (a warm "
                  "start, docs/mnist.md trial 27)",
                  "type": float},
    )
    update_form: str = dataclasses.field(
        default="linear",
        metadata={"help": "how the output layer makes the update: linear (the paper: output_scale "
                  "* (w.h + b)), direction_magnitude (output_scale * d * exp(m), d and m two "
                  "linear outputs, so the step size can follow the gradient's scale) or "
                  "gradient_mix (output_scale * b + mix_scale * sum_j a_j v_j: b and every a_j "
                  "linear outputs, v_j the raw gradient and each moving average of "
                  "--momentum-inputs, so a step can be proportional to the gradient, as SGD's "
                  "and momentum's are)",
                  "choices": UPDATE_FORMS},
    )
    mix_scale: float = dataclasses.field(
        default=10.0,
        metadata={"help": "with --update-form gradient_mix, the gradient coefficients a_j are "
                  "multiplied by this: an output a_j = -1 steps mix_scale times v_j downhill"},
    )
    mix_rms_decay: float = dataclasses.field(
        default=0.0,
        metadata={"help": "with --update-form gradient_mix, a decay in (0, 1) divides every raw "
                  "feature v_j by the root of a bias-corrected moving average of g^2 with this "
                  "decay (as Adam divides its momentum), so that the mix does not depend on the "
                  "gradient's scale; 0 (the default): raw features"},
    )
    momentum_inputs: tuple[float, ...] = dataclasses.field(
        default=(),
        metadata={"help": "decay rates of moving averages of the gradient that the LSTM sees "
                  "beside the gradient, each encoded like it (e.g. 0.5 0.9 0.99; none: the paper's "
                  "inputs)", "type": float},
    )
    momentum_bias_correction: bool = dataclasses.field(
        default=False,
        metadata={"help": "divide each moving average by 1 - decay^t, as Adam does, so that young "
                  "averages are not biased toward zero (needs --momentum-inputs)"},
    )

    def __post_init__(self) -> None:
        if self.layers < 1:
            raise UsageError(f"Invalid number of LSTM layers: {self.layers}; use 1 or more")
        if self.hidden_size < 1:
            raise UsageError(f"Invalid LSTM hidden size: {self.hidden_size}; use 1 or more")
        input_size(self.preprocessing)
        if not 0 < self.preprocess_p <= MAX_PREPROCESS_P:
            raise UsageError(
                f"Invalid preprocess_p: {self.preprocess_p}; use a positive number up to "
                f"{MAX_PREPROCESS_P} (e^p must fit in float32)"
            )
        if not self.output_scale > 0:
            raise UsageError(f"Invalid output_scale: {self.output_scale}; use a positive number")
        if not self.mix_scale > 0:
            raise UsageError(f"Invalid mix_scale: {self.mix_scale}; use a positive number")
        if self.output_init not in OUTPUT_INITS:
            raise UsageError(
                f"Unknown output_init: {self.output_init!r}; choose one of {', '.join(OUTPUT_INITS)}"
            )
        if self.update_form not in UPDATE_FORMS:
            raise UsageError(
                f"Unknown update_form: {self.update_form!r}; choose one of {', '.join(UPDATE_FORMS)}"
            )
        if self.output_bias and len(self.output_bias) != output_count(self):
            raise UsageError(
                f"Invalid output_bias: {len(self.output_bias)} values for an output layer of "
                f"{output_count(self)} (update form {self.update_form} with {len(self.momentum_inputs)} "
                "moving averages); give one value per output"
            )
        for value in self.output_bias:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise UsageError(f"Invalid output_bias value: {value!r}; use finite numbers")
        object.__setattr__(self, "output_bias", tuple(float(v) for v in self.output_bias))
        for decay in self.momentum_inputs:
            if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
                raise UsageError(
                    f"Invalid momentum input decay: {decay!r}; use numbers in [0, 1), e.g. 0.5 0.9 0.99"
                )
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
    """Per-coordinate recurrent state, one column per coordinate: one `[hidden, n]` tensor per
    layer for h and for c, and with `momentum_inputs` or `mix_rms_decay` the gradient's moving
    averages, `[momentum_columns, n]` (`LSTMOptimizerConfig.momentum_columns` says which; None
    without either), for n coordinates.

    Units along the first axis and coordinates along the second (feature-major) make every
    element-wise loop of the step run along the coordinates in long vectors, instead of along
    20 units at a time (on CPU, 12% to 33% faster meta-training than the transpose, except
    float32 products under `torch.compile`; BENCHMARKS.md).
    """

    h: tuple[torch.Tensor, ...]
    c: tuple[torch.Tensor, ...]
    momentum: torch.Tensor | None = None

    def detach(self) -> "LSTMState":
        momentum = None if self.momentum is None else self.momentum.detach()
        return LSTMState(tuple(t.detach() for t in self.h), tuple(t.detach() for t in self.c), momentum)


def meta_param_shapes(config: LSTMOptimizerConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every meta-parameter, in a fixed order.

    For a reader of a checkpoint who knows `torch.nn.LSTM`: layer k's `lstm.k.weight` is
    `[inputs + hidden, 4 * hidden]`, the transpose of torch's stacked input and recurrent
    weights; its gates are ordered (input, forget, output, cell), not torch's (input, forget,
    cell, output); there is one bias per layer, not two; and the cell candidate is an ordinary
    tanh of its pre-activation (`lstm_step` computes it as 2 sigmoid(2x) - 1).
    """
    hidden = config.hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    fan_in = config.input_size
    for layer in range(config.layers):
        # One matrix for [input, h] -> the four gates, ordered (input, forget, output, cell).
        shapes[f"lstm.{layer}.weight"] = (fan_in + hidden, 4 * hidden)
        shapes[f"lstm.{layer}.bias"] = (4 * hidden,)
        fan_in = hidden
    shapes["output.weight"] = (hidden, output_count(config))
    shapes["output.bias"] = (output_count(config),)
    return shapes


def output_count(config: LSTMOptimizerConfig) -> int:
    """Outputs of the LSTM's output layer per coordinate.

    linear: the update. direction_magnitude: column 0 is the direction d, column 1 the
    log-magnitude m. gradient_mix: column 0 is the bias b, then one coefficient per raw feature
    (the gradient, then each moving average).
    """
    return {"linear": 1, "direction_magnitude": 2,
            "gradient_mix": 2 + len(config.momentum_inputs)}[config.update_form]


def init_meta_params(
    config: LSTMOptimizerConfig,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> MetaParams:
    """Fresh meta-parameters: uniform(±1/sqrt(hidden)) like torch.nn.LSTM, forget bias 1.

    The forget-gate bias starts at 1 so that the cell state is remembered by default, a common
    LSTM choice (Jozefowicz et al. 2015) that speeds up early meta-training. With
    `output_init="zeros"` the output layer starts at zero: the first updates are all zero
    instead of a random constant drift, which on MNIST saturates the optimizee's sigmoid units
    and leaves meta-training stuck at the chance-level loss (see docs/mnist.md). A given
    `output_bias` replaces the output layer's initial bias (a warm start: with zero output
    weights, the optimizer starts as the fixed update that the bias makes).
    """
    bound = 1.0 / math.sqrt(config.hidden_size)
    params: MetaParams = {}
    for name, shape in meta_param_shapes(config).items():
        tensor = torch.empty(shape, dtype=dtype).uniform_(-bound, bound, generator=generator)
        if name.startswith("lstm.") and name.endswith(".bias"):
            hidden = config.hidden_size
            tensor[hidden : 2 * hidden] += 1.0
        if name.startswith("output.") and config.output_init == "zeros":
            tensor.zero_()
        if name == "output.bias" and config.output_bias:
            tensor.copy_(torch.tensor(config.output_bias, dtype=dtype))
        params[name] = tensor
    return params


def init_state(
    config: LSTMOptimizerConfig,
    rows: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> LSTMState:
    """Zero hidden and cell state (and zero moving averages) for `rows` coordinates."""
    def zeros(units: int) -> torch.Tensor:
        return torch.zeros(units, rows, dtype=dtype, device=device)

    momentum = zeros(config.momentum_columns) if config.momentum_columns else None
    return LSTMState(tuple(zeros(config.hidden_size) for _ in range(config.layers)),
                     tuple(zeros(config.hidden_size) for _ in range(config.layers)), momentum)


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def _constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """`torch.tensor(values)`, made once per dtype and device."""
    if torch.compiler.is_compiling():  # a constant of the graph; caching it is a side effect
        return torch.tensor(values, dtype=dtype, device=device)
    key = (values, dtype, device)
    if key not in _CONSTANTS:
        # A normal tensor even when first asked for under inference_mode: an inference tensor
        # here would break every later call that autograd records (meta-training).
        with torch.inference_mode(False):
            _CONSTANTS[key] = torch.tensor(values, dtype=dtype, device=device)
    return _CONSTANTS[key]


def _candidate_doubler(hidden: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, ..., 1, 2, ..., 2]: 3 * hidden ones (the gates), hidden twos (the cell candidate)."""
    return _constant((1.0,) * (3 * hidden) + (2.0,) * hidden, dtype, device)


def gradient_features(
    grads: torch.Tensor, momentum: torch.Tensor | None, config: LSTMOptimizerConfig
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The raw features of every coordinate, `[1 + len(momentum_inputs), n]`: the gradient,
    then each moving average of it as the LSTM sees it; and the updated moving averages
    (`LSTMState.momentum`).

    Each moving average is m <- decay * m + (1 - decay) * g, starting from zero. Without bias
    correction the LSTM sees m itself (how far a young average lags is for it to learn); with
    it, m / w, where the weight w <- decay * w + (1 - decay), also from zero, equals
    1 - decay^t after t steps. With `mix_rms_decay` the state also carries the average of g^2
    and its weight, the same way (`mix_rms`).
    """
    row = grads.unsqueeze(0)
    if not config.momentum_columns:
        return row, None
    count = len(config.momentum_inputs)
    pieces, seen = [], row[:0]
    if count:
        decay = _constant(config.momentum_inputs, grads.dtype, grads.device).unsqueeze(1)
        keep = _constant(tuple(1.0 - d for d in config.momentum_inputs), grads.dtype, grads.device).unsqueeze(1)
        averages = torch.addcmul(momentum[:count] * decay, row, keep)
        pieces.append(averages)
        seen = averages
        if config.momentum_bias_correction:
            weights = torch.addcmul(keep, momentum[count : 2 * count], decay)
            pieces.append(weights)
            seen = averages / weights
    if config.mix_rms_decay:
        decay = config.mix_rms_decay
        squares = momentum[-2:-1] * decay + row.square() * (1.0 - decay)
        pieces.append(torch.cat((squares, momentum[-1:] * decay + (1.0 - decay)), dim=0))
    momentum = pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=0)
    return torch.cat((row, seen), dim=0), momentum


def mix_rms(momentum: torch.Tensor) -> torch.Tensor:
    """The root of the bias-corrected average of g^2 kept by `mix_rms_decay`, `[1, n]`, with
    1e-16 added under the root (Adam's epsilon of 1e-8, squared), so that a coordinate whose
    gradients were all zero divides by 1e-8, not by zero."""
    return (momentum[-2:-1] / momentum[-1:] + 1e-16).sqrt()


def encode_features(features: torch.Tensor, config: LSTMOptimizerConfig) -> torch.Tensor:
    """The LSTM's inputs `[config.input_size, n]` for features `[count, n]`: every feature
    encoded by the preprocessing, the encodings of the first feature first."""
    x = preprocess(features, config.preprocessing, config.preprocess_p, dim=1)
    return x.reshape(config.input_size, features.shape[1])


def lstm_step(
    meta_params: MetaParams,
    grads: torch.Tensor,
    state: LSTMState,
    config: LSTMOptimizerConfig,
    matmul_dtype: str = "float32",
) -> tuple[torch.Tensor, LSTMState]:
    """One step of the learned optimizer for every coordinate at once.

    Args:
      meta_params: the LSTM's weights, as made by `init_meta_params`.
      grads: the optimizee's gradients, one per coordinate, shape [rows].
      state: the recurrent state of every coordinate (`init_state`).
      config: the architecture.
      matmul_dtype: the dtype of the LSTM layers' matrix products (`MATMUL_DTYPES`): with
        bfloat16 the operands are rounded to it and each product, summed in float32, is rounded
        to it once before it returns to the gradients' dtype, in which the state and all
        element-wise work stay.

    Returns:
      (updates, new_state): `updates` has shape [rows] and is added to the parameters.
    """
    hidden = config.hidden_size
    features, momentum = gradient_features(grads, state.momentum, config)
    x = encode_features(features, config)
    # tanh(z) = 2 sigmoid(2z) - 1. Doubling the cell candidate's weights and bias lets one
    # sigmoid cover all four gates; torch's CPU sigmoid is several times faster than its tanh,
    # and the elementwise work, not the matrix products, bounds this step. (Doubling is exact
    # in floating point, so this equals doubling the candidate's pre-activations.)
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
    if config.update_form == "direction_magnitude":
        # The step's size is exp of a linear function of h: with log-encoded gradients it can
        # be a power of |g|, where the linear form is at best linear in log|g| (docs/mnist.md).
        updates = out[0] * out[1].exp() * config.output_scale
    elif config.update_form == "gradient_mix":
        # A per-coordinate, per-step learned combination of the raw gradient and its averages:
        # constant coefficients make SGD or heavy-ball momentum, so the step can grow with the
        # gradient the way NAG's does, which the other forms find hard (docs/mnist.md, trial 7).
        mixed = features / mix_rms(momentum) if config.mix_rms_decay else features
        updates = out[0] * config.output_scale + (out[1:] * mixed).sum(dim=0) * config.mix_scale
    else:
        updates = out.squeeze(0) * config.output_scale
    return updates, LSTMState(tuple(new_h), tuple(new_c), momentum)


def _gate_inputs(bias: torch.Tensor, inputs: torch.Tensor, weight: torch.Tensor, matmul_dtype: str) -> torch.Tensor:
    """The gates' pre-activations `bias + weight.T @ inputs` for `inputs` [fan_in, n], in the
    inputs' dtype, the product computed in `matmul_dtype`.

    bfloat16 keeps float32's exponent range with an 8-bit significand, and CPUs with
    AVX512-BF16 multiply it faster; the bias is added after the product, in the inputs' dtype,
    where `torch.compile` fuses it into the gates' sigmoid.
    """
    # The bias is added in place: torch's eager CPU kernels are several times slower at making
    # a new [units, rows] tensor from a [units, 1] broadcast than at adding one into it.
    # CPU BLAS multiplied [units, fan_in] by [fan_in, n] faster here with the first factor
    # contiguous than as a transposed view of the stored weight.
    # (Out of place when compiled, where it makes no difference: in place breaks the
    # checkpointing of `_compiled_lstm_step`.)
    low = MATMUL_DTYPES[matmul_dtype]
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
    their memory traffic but not their exponentials: 12% to 17% faster in this project's CPU
    benchmarks, and no faster on small models (BENCHMARKS.md); in meta-training the compiled
    step also keeps its sigmoids for the backward (`_lstm_step_saving_sigmoids`). It needs a
    C++ compiler on CPU, the first calls of each kind (with or without autograd, new shapes) take seconds to
    a minute to compile, and the results equal the eager step's to floating-point rounding,
    not bit for bit.
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
    26% faster in one process (float32: no change), for 28% (20-step truncations) to 54% (whole
    100-step unrolls) more peak memory (BENCHMARKS.md, "Kept sigmoids"). Selective activation
    checkpointing is PyTorch's interface for that choice: sigmoids MUST_SAVE, everything else
    left to the partitioner (PREFER_SAVE).
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
