"""Which device a command computes on, checked before any work starts.

Random draws (initial parameters, minibatches, problems) are always made by CPU generators and
then moved, so a run sees the same problems and minibatches on every device; only the
arithmetic, and with it the rounding, differs.
"""

from __future__ import annotations

import torch

from optimizer3.errors import UsageError

DEVICE_TYPES = ("cpu", "cuda")
DEVICE_HELP = (
    "where the optimizees and the learned optimizer compute: cpu, cuda or cuda:N (random draws "
    "stay on the CPU, so every device sees the same problems and minibatches)"
)


def check_device_name(name: str) -> None:
    """Refuse a name that is no device of a supported type (whether this machine has it or not)."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise UsageError(f"Invalid device: {name!r}; use cpu, cuda or cuda:N")


def device_from_name(name: str) -> torch.device:
    """The device `name` names, refused with a one-line error when this machine lacks it."""
    check_device_name(name)
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise UsageError(f"Invalid device: {name!r}: this machine has no CUDA device; use --device cpu")
        if device.index is not None and device.index >= count:
            raise UsageError(
                f"Invalid device: {name!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
    return device
