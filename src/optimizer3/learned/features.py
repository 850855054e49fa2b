"""What a learned optimizer sees of each coordinate: its gradient, moving averages of it, and
their encoding (the paper's log/sign preprocessing).

Every function works on all coordinates at once; features are laid out feature-major, one row
per feature and one column per coordinate.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent", Appendix A.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from optimizer3.errors import UsageError

if TYPE_CHECKING:
    from optimizer3.learned.lstm import LSTMOptimizerConfig

PREPROCESSINGS = ("log_sign", "none")


def input_size(preprocessing: str) -> int:
    """Number of LSTM inputs per coordinate that `preprocessing` produces."""
    if preprocessing == "log_sign":
        return 2
    if preprocessing == "none":
        return 1
    raise UsageError(
        f"Unknown preprocessing: {preprocessing!r}; choose one of {', '.join(PREPROCESSINGS)}"
    )


def log_sign(grads: torch.Tensor, p: float, dim: int = -1) -> torch.Tensor:
    """Encode gradients as (log-magnitude, sign), the paper's Appendix A scheme.

    For |g| >= e^-p the pair is (log|g| / p, sign g); smaller gradients, where the logarithm
    is dominated by noise, become (-1, e^p g). The encoding keeps the LSTM's inputs of order
    one over many orders of magnitude of gradient scale.

    Args:
      grads: gradients of any shape, e.g. [rows].
      p: the threshold exponent; the paper uses 10.
      dim: where the pair's axis goes in the result.

    Returns:
      Tensor of grads' shape with an axis of 2 inserted at `dim`: [rows, 2] by default.
    """
    magnitude = grads.abs()
    large = magnitude >= math.exp(-p)
    # Clamping keeps log finite (and its gradient finite when second derivatives are kept) in
    # the branch that torch.where discards for tiny gradients.
    log_part = torch.where(large, magnitude.clamp_min(math.exp(-p)).log() / p, -1.0)
    sign_part = torch.where(large, grads.sign(), grads * math.exp(p))
    return torch.stack((log_part, sign_part), dim=dim)


def preprocess(grads: torch.Tensor, preprocessing: str, p: float, dim: int = -1) -> torch.Tensor:
    """Turn gradients into LSTM inputs: an axis of `input_size` inserted at `dim` ([rows] gives
    [rows, input_size] by default)."""
    if preprocessing == "log_sign":
        return log_sign(grads, p, dim)
    if preprocessing == "none":
        return grads.unsqueeze(dim)
    input_size(preprocessing)  # raises the error that names the choices
    raise AssertionError("unreachable")


_CONSTANTS: dict[tuple, torch.Tensor] = {}


def constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
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


def gradient_features(
    grads: torch.Tensor, momentum: torch.Tensor | None, config: "LSTMOptimizerConfig"
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
        decay = constant(config.momentum_inputs, grads.dtype, grads.device).unsqueeze(1)
        keep = constant(tuple(1.0 - d for d in config.momentum_inputs), grads.dtype, grads.device).unsqueeze(1)
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


def encode_features(features: torch.Tensor, config: "LSTMOptimizerConfig") -> torch.Tensor:
    """The LSTM's inputs `[config.input_size, n]` for features `[count, n]`: every feature
    encoded by the preprocessing, the encodings of the first feature first."""
    x = preprocess(features, config.preprocessing, config.preprocess_p, dim=1)
    return x.reshape(config.input_size, features.shape[1])
