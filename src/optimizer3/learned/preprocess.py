"""Gradient preprocessing: what the LSTM sees of each coordinate's gradient.

References: Andrychowicz et al. 2016, "Learning to learn by gradient descent by gradient
descent", Appendix A.
"""

from __future__ import annotations

import math

import torch

from optimizer3.errors import UsageError

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
