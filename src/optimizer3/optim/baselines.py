"""Hand-designed baselines as real `torch.optim` optimizers, built by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from optimizer3.errors import UsageError

OptimizerFactory = Callable[[Iterable[torch.Tensor], float], torch.optim.Optimizer]

BASELINES: dict[str, OptimizerFactory] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "nag": lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda params, lr: torch.optim.RMSprop(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def check_baseline_names(names: Iterable[str]) -> tuple[str, ...]:
    """Return `names` as a tuple, or raise naming the first unknown one and the known ones."""
    names = tuple(names)
    for name in names:
        if name not in BASELINES:
            raise UsageError(
                f"Unknown baseline optimizer: {name!r}; choose from {', '.join(BASELINES)}"
            )
    return names


def make_baseline(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """The baseline optimizer `name` over `params` with learning rate `lr`."""
    _check(name, [lr])
    return BASELINES[name](params, lr)


def make_baselines(name: str, params: list[torch.Tensor], lrs: list[float]) -> torch.optim.Optimizer:
    """One optimizer `name` with a parameter group per learning rate, `params[i]` at `lrs[i]`;
    each group's updates are those that its own `make_baseline` optimizer would make."""
    _check(name, lrs)
    groups = [{"params": [tensor], "lr": lr} for tensor, lr in zip(params, lrs, strict=True)]
    return BASELINES[name](groups, lrs[0])


def _check(name: str, lrs: Iterable[float]) -> None:
    check_baseline_names([name])
    for lr in lrs:
        if not lr > 0:
            raise UsageError(f"Invalid learning rate: {lr}; use a positive number")
