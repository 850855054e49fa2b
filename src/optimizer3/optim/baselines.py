"""Hand-designed baselines as real `torch.optim` optimizers, built by name.

Most baselines are coordinatewise: a step updates every coordinate from that coordinate's own
history, so one optimizer over a batch of problems stacked as the rows of one tensor is one
optimizer per problem, and a parameter group per learning rate runs several learning rates in
lockstep. Two are not, and are given each problem's own tensors in their shapes (`per_problem`):
Muon orthogonalizes every weight matrix as a whole (`torch.optim.Muon` takes 2-D tensors only,
and its documentation advises AdamW for the rest), and Prodigy estimates one step size from
inner products over all of an optimizer's parameters, so every problem gets its own Prodigy.

Untuned baselines (`tuned=False`) are what a user who does not want to tune reaches for: Adam
at its default learning rate, and the learning-rate-free Prodigy and Schedule-Free AdamW at
their recommended defaults (those two from the optional packages `prodigyopt` and
`schedulefree`, installed by the `lr-free` extra).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Sequence

import torch

from optimizer3.errors import UsageError

# One copy's parameters: a tensor of stacked problems for a coordinatewise baseline, or each
# problem's list of tensors in their own shapes for a `per_problem` one.
Copy = torch.Tensor | Sequence[Sequence[torch.Tensor]]


class OptimizerSet:
    """Several optimizers stepped as one (Muon with AdamW, a Prodigy per problem)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = list(optimizers)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()


def _groups(copies: Sequence[Copy], lrs: Sequence[float]) -> list[dict]:
    return [{"params": [copy] if isinstance(copy, torch.Tensor) else [t for problem in copy for t in problem],
             "lr": lr} for copy, lr in zip(copies, lrs, strict=True)]


def _muon(copies: Sequence[Copy], lrs: Sequence[float]) -> OptimizerSet:
    """torch.optim.Muon on every weight matrix, AdamW on the rest, one learning rate for both:
    Muon scales its update to AdamW's RMS (`adjust_lr_fn="match_rms_adamw"`) so that the two
    share a tuned rate, as its documentation describes."""
    matrices = [{"params": [t for problem in copy for t in problem if t.dim() == 2], "lr": lr}
                for copy, lr in zip(copies, lrs, strict=True)]
    rest = [{"params": [t for problem in copy for t in problem if t.dim() != 2], "lr": lr}
            for copy, lr in zip(copies, lrs, strict=True)]
    optimizers = []
    if matrices[0]["params"]:
        optimizers.append(torch.optim.Muon(matrices, lr=lrs[0], adjust_lr_fn="match_rms_adamw"))
    if rest[0]["params"]:
        optimizers.append(torch.optim.AdamW(rest, lr=lrs[0]))
    return OptimizerSet(optimizers)


def _prodigy(copies: Sequence[Copy], lrs: Sequence[float]) -> OptimizerSet:
    """A Prodigy optimizer per problem and copy: its step size is estimated from all of an
    optimizer's parameters, so problems sharing one would share a step size."""
    prodigy = importlib.import_module("prodigyopt").Prodigy
    return OptimizerSet([prodigy(list(problem), lr=lr) for copy, lr in zip(copies, lrs, strict=True)
                         for problem in copy])


def _schedule_free(copies: Sequence[Copy], lrs: Sequence[float]) -> torch.optim.Optimizer:
    """Schedule-Free AdamW at its defaults, put in training mode: its parameters then hold the
    point where gradients are taken; `eval()` (before measuring the final loss) swaps in the
    averaged point it returns."""
    optimizer = importlib.import_module("schedulefree").AdamWScheduleFree(_groups(copies, lrs), lr=lrs[0])
    optimizer.train()
    return optimizer


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A baseline optimizer: how to build it over copies of the problems, one learning rate per
    copy, and how it is used."""

    build: Callable[[Sequence[Copy], Sequence[float]], object]
    description: str
    tuned: bool = True  # its learning rate is tuned; otherwise it runs at `default_lr`
    default_lr: float | None = None
    per_problem: bool = False  # takes each problem's own tensors in their shapes
    package: str | None = None  # an optional package it comes from
    make: Callable[..., torch.optim.Optimizer] | None = None  # coordinatewise: (params, lr) -> optimizer

    @property
    def available(self) -> bool:
        return self.package is None or importlib.util.find_spec(self.package) is not None


def _coordinatewise(make: Callable[..., torch.optim.Optimizer], description: str, **options) -> Baseline:
    """A coordinatewise baseline: `make(params, lr)` is the torch optimizer itself."""
    return Baseline(lambda copies, lrs: make(_groups(copies, lrs), lrs[0]), description, make=make, **options)


BASELINES: dict[str, Baseline] = {
    "sgd": _coordinatewise(lambda params, lr: torch.optim.SGD(params, lr=lr), "SGD"),
    "nag": _coordinatewise(lambda params, lr: torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
                           "SGD with Nesterov momentum 0.9"),
    "rmsprop": _coordinatewise(lambda params, lr: torch.optim.RMSprop(params, lr=lr), "RMSprop"),
    "adam": _coordinatewise(lambda params, lr: torch.optim.Adam(params, lr=lr), "Adam"),
    "adamw": _coordinatewise(lambda params, lr: torch.optim.AdamW(params, lr=lr), "AdamW, weight decay 0.01"),
    "muon": Baseline(_muon, "Muon on weight matrices, AdamW on the rest", per_problem=True),
    "adam-default": _coordinatewise(lambda params, lr: torch.optim.Adam(params, lr=lr),
                                    "Adam at its default learning rate 1e-3", tuned=False, default_lr=1e-3),
    "prodigy": Baseline(_prodigy, "Prodigy at its defaults (learning-rate free)", tuned=False, default_lr=1.0,
                        per_problem=True, package="prodigyopt"),
    "schedule-free": Baseline(_schedule_free, "Schedule-Free AdamW at its defaults", tuned=False,
                              default_lr=0.0025, package="schedulefree"),
}
# The paper's four, which its experiments tune.
PAPER_BASELINES = ("sgd", "nag", "rmsprop", "adam")


def check_baseline_names(names: Iterable[str]) -> tuple[str, ...]:
    """Return `names` as a tuple, or raise naming the first unknown one and the known ones."""
    names = tuple(names)
    for name in names:
        if name not in BASELINES:
            raise UsageError(
                f"Unknown baseline optimizer: {name!r}; choose from {', '.join(BASELINES)}"
            )
        if not BASELINES[name].available:
            raise UsageError(
                f"Baseline {name!r} needs the package {BASELINES[name].package}, which is not installed; "
                "install it with pip install -e \".[lr-free]\", or leave the baseline out"
            )
    return names


def make_baseline(name: str, params: Copy | Iterable[torch.Tensor], lr: float):
    """The baseline optimizer `name` over `params` (a list of tensors, or for a `per_problem`
    baseline a list of problems' lists of tensors) with learning rate `lr`."""
    _check(name, [lr])
    baseline = BASELINES[name]
    if baseline.make is not None:  # parameters or parameter groups, as torch takes them
        return baseline.make(params, lr)
    params = list(params)
    if params and isinstance(params[0], torch.Tensor):
        params = [params]  # the tensors of one problem
    return baseline.build([params], [lr])


def make_baselines(name: str, copies: Sequence[Copy], lrs: Sequence[float]):
    """One optimizer `name` over several copies of the problems, copy i at learning rate
    `lrs[i]`; each copy's updates are those its own `make_baseline` optimizer would make."""
    _check(name, lrs)
    return BASELINES[name].build(copies, list(lrs))


def _check(name: str, lrs: Iterable[float]) -> None:
    check_baseline_names([name])
    for lr in lrs:
        if not lr > 0:
            raise UsageError(f"Invalid learning rate: {lr}; use a positive number")
