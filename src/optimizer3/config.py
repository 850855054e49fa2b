"""Typed, frozen configuration of every experiment, and its round trip through plain dicts.

Each field's `metadata["help"]` is the text that `--help` shows for its command-line flag.
The resolved configuration is printed at start and stored in every checkpoint and result file.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from optimizer3.devices import DEVICE_HELP, check_device_name
from optimizer3.errors import UsageError
from optimizer3.learned.lstm import MATMUL_DTYPES, LSTMOptimizerConfig
from optimizer3.meta.distributed import check_size
from optimizer3.optim.baselines import BASELINES, check_baseline_names
from optimizer3.tasks import TaskConfig
from optimizer3.tasks.mlp import activation_names

LOSS_WEIGHTINGS = ("uniform", "linear", "final")
LR_SCHEDULES = ("cosine", "constant")
META_OBJECTIVES = ("loss", "log_loss")
# Execution settings in two configs (meta-training, evaluation), each shared by one flag.
COMPILE_HELP = (
    "apply the LSTM step through torch.compile: up to 17% faster on large models (BENCHMARKS.md) "
    "after a compile of seconds to a minute; needs a C++ compiler; results equal to "
    "floating-point rounding"
)


def _field(default: Any, help: str, **metadata: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True)
class LearningRateGrid:
    """A log-spaced grid of learning rates."""

    lr_min: float = dataclasses.field(default=1e-4, metadata={"help": "smallest learning rate tried"})
    lr_max: float = dataclasses.field(default=1.0, metadata={"help": "largest learning rate tried"})
    per_decade: int = dataclasses.field(
        default=4, metadata={"help": "grid points per factor of 10 (at least 3)"}
    )
    max_extensions: int = dataclasses.field(
        default=4, metadata={"help": "decades the grid may grow by when the best is at an edge"}
    )

    def __post_init__(self) -> None:
        if not (0 < self.lr_min < self.lr_max and math.isfinite(self.lr_max)):
            raise UsageError(
                f"Invalid learning-rate grid [{self.lr_min}, {self.lr_max}]; "
                "use finite 0 < lr_min < lr_max"
            )
        if self.per_decade < 3:
            raise UsageError(f"Invalid per_decade: {self.per_decade}; use 3 or more")
        if self.max_extensions < 0:
            raise UsageError(f"Invalid max_extensions: {self.max_extensions}; use 0 or more")

    def exponents(self) -> list[float]:
        """log10 of every grid point: from lr_min in steps of 1/per_decade of a decade, to the
        point nearest lr_max (lr_max itself when the range is whole steps)."""
        lo, hi = math.log10(self.lr_min), math.log10(self.lr_max)
        count = round((hi - lo) * self.per_decade)
        return [lo + i / self.per_decade for i in range(count + 1)]


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Truncated-BPTT meta-training of the LSTM optimizer on a task family."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    optimizer: LSTMOptimizerConfig = dataclasses.field(default_factory=LSTMOptimizerConfig)
    horizon: int = _field(100, "optimizee steps per trajectory")
    unroll: int = _field(20, "steps per truncation: one meta-update each; must divide horizon")
    problems: int = _field(128, "problems per trajectory (the meta-batch)")
    trajectories: int = _field(300, "trajectories, each on freshly sampled problems")
    meta_lr: float = _field(0.01, "Adam learning rate of the meta-optimizer")
    lr_schedule: str = _field(
        "cosine", "meta learning-rate schedule over the run", choices=LR_SCHEDULES
    )
    schedule_trajectories: int = _field(
        0, "trajectories that the cosine schedule spans, when the run is to stop before its end "
        "(a stage cut where its best came in a longer run, at the learning rate it had there); 0: "
        "the run's --trajectories"
    )
    average_decay: float = _field(
        0.0, "validate, keep as the best and export an exponential moving average of the "
        "meta-parameters, updated after every meta-step with this decay in (0, 1) (Polyak "
        "averaging; on MNIST, decay 0.9 validated no better than the meta-parameters themselves, "
        "docs/mnist.md trial 23); 0: the meta-parameters themselves"
    )
    clip_grad_norm: float = _field(1.0, "clip the meta-gradient's norm to this; 0 disables")
    loss_weights: str = _field(
        "uniform",
        "meta-loss weight w_t of the loss after step t: uniform (w_t = 1, the paper's), "
        "linear (w_t = t / horizon) or final (only the last step)",
        choices=LOSS_WEIGHTINGS,
    )
    meta_objective: str = _field(
        "loss",
        "what the meta-loss sums over steps: loss (the paper's) or log_loss (the log of each "
        "problem's loss plus 1e-8, so that halving a small loss counts as much as halving a large one)",
        choices=META_OBJECTIVES,
    )
    second_order: bool = _field(
        False, "keep the optimizee's second derivatives in the meta-gradient (slower)"
    )
    recompute_every: int = _field(
        0, "keep the meta-graph of only this many steps in memory at a time: each truncation runs "
        "forward once without a graph, then every segment of this many steps is run again, last "
        "first, for its share of the meta-gradient (the same meta-gradient to rounding; memory for "
        "one segment's graph plus each segment's starting state; about 1.5 times the time on "
        "MNIST); 0, or the unroll or more, keeps the whole truncation's graph"
    )
    loss_clip: float = _field(
        0.0, "clip each problem's loss in the meta-loss at this multiple of its initial loss, "
        "and count a non-finite loss as that cap; 0 disables"
    )
    max_skips: int = _field(
        10, "stop after this many trajectories in a row ended in a meta-update skipped for a "
        "non-finite meta-loss or meta-gradient"
    )
    validation_problems: int = _field(500, "fixed validation problems for early stopping")
    validate_every: int = _field(25, "validate every this many trajectories")
    checkpoint_every: int = _field(5, "save a checkpoint every this many trajectories")
    seed: int = _field(0, "seed of meta-parameter initialization and training problems")
    validation_seed: int = _field(1, "seed of the validation problems")
    compile: bool = _field(False, COMPILE_HELP)
    matmul_dtype: str = _field(
        "float32", "dtype of the LSTM's matrix products in meta-training's unrolls: bfloat16 was "
        "up to 1.9 times as fast on a CPU with AVX512-BF16 (BENCHMARKS.md; not measured on a GPU) "
        "and is slower on CPUs without; the LSTM's state, its element-wise work, validation and "
        "the trained optimizer stay float32",
        choices=tuple(MATMUL_DTYPES),
    )
    device: str = _field("cpu", DEVICE_HELP)
    workers: int = _field(
        1, "processes on this machine that split every trajectory's problems between them, each "
        "with an equal share of --threads, and average the meta-gradient (torch.distributed; the "
        "same problems and minibatches, meta-gradients equal to rounding); under torchrun, its "
        "processes are the workers and this stays 1"
    )
    init_from: str = _field(
        "", "start from these meta-parameters instead of random ones: a shipped pretrained name, a "
        "learned-optimizer file or a training checkpoint (its best); empty: a random start"
    )

    def __post_init__(self) -> None:
        for name in ("horizon", "unroll", "problems", "trajectories", "validation_problems",
                     "validate_every", "checkpoint_every", "max_skips", "workers"):
            value = getattr(self, name)
            if value < 1:
                raise UsageError(f"Invalid {name}: {value}; use a positive integer")
        if self.schedule_trajectories and self.schedule_trajectories < self.trajectories:
            raise UsageError(
                f"Invalid schedule_trajectories: {self.schedule_trajectories} is fewer than the run's "
                f"{self.trajectories} trajectories; use 0 or at least {self.trajectories}"
            )
        if self.schedule_trajectories and self.lr_schedule != "cosine":
            raise UsageError(
                f"schedule_trajectories ({self.schedule_trajectories}) sets the length of the cosine "
                f"schedule, and this run's is {self.lr_schedule!r}; drop it or use the cosine schedule"
            )
        if self.recompute_every < 0:
            raise UsageError(f"Invalid recompute_every: {self.recompute_every}; use 0 (off) or a positive number of steps")
        if self.horizon % self.unroll:
            raise UsageError(
                f"Invalid unroll: {self.unroll} does not divide the horizon {self.horizon}; "
                "choose an unroll that does"
            )
        if not self.meta_lr > 0:
            raise UsageError(f"Invalid meta learning rate: {self.meta_lr}; use a positive number")
        if self.loss_clip < 0:
            raise UsageError(f"Invalid loss_clip: {self.loss_clip}; use 0 (off) or a positive multiple")
        if isinstance(self.average_decay, bool) or not 0 <= self.average_decay < 1:
            raise UsageError(f"Invalid average_decay: {self.average_decay!r}; use 0 (off) or a number in (0, 1), e.g. 0.9")
        if self.clip_grad_norm < 0:
            raise UsageError(f"Invalid clip_grad_norm: {self.clip_grad_norm}; use 0 or more")
        _check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check_choice("loss_weights", self.loss_weights, LOSS_WEIGHTINGS)
        _check_choice("meta_objective", self.meta_objective, META_OBJECTIVES)
        _check_choice("matmul_dtype", self.matmul_dtype, tuple(MATMUL_DTYPES))
        kinds = self.task.kinds if self.task.name == "mnist" else 1
        mixed = (f"the activations in {self.task.activation!r}" if len(activation_names(self.task.activation)) > 1
                 else f"the architectures of --hidden and --mix-hidden {' '.join(self.task.mix_hidden)}")
        for name in ("problems", "validation_problems"):
            if getattr(self, name) % kinds:
                raise UsageError(
                    f"Invalid {name}: {getattr(self, name)} is not a multiple of {kinds}, {mixed}; "
                    "use a multiple, so that each kind has as many instances"
                )
        check_size(self.workers, self.problems, self.validation_problems)
        if self.seed == self.validation_seed:
            raise UsageError(f"The training and validation seeds are both {self.seed}; make them differ")
        check_device_name(self.device)


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Tuned baselines and the learned optimizer on the same held-out test problems."""

    baselines: tuple[str, ...] = _field(
        ("sgd", "nag", "rmsprop", "adam"), "baseline optimizers to compare against"
    )
    test_problems: int = _field(1000, "held-out test problems")
    test_seed: int = _field(2, "seed of the test problems (differs from training and validation)")
    steps: int = _field(0, "optimizer steps per test problem; 0 means the meta-training horizon")
    tuning_problems: int = _field(500, "validation problems used to tune baseline learning rates")
    grid: LearningRateGrid = dataclasses.field(default_factory=LearningRateGrid)
    bootstrap: int = _field(2000, "bootstrap resamples for the 95% intervals")
    compile: bool = _field(False, COMPILE_HELP)
    device: str = _field("cpu", DEVICE_HELP)
    workers: int = _field(
        1, "processes that run the optimizers of a comparison side by side, each with an equal share "
        "of --threads (the results do not change)"
    )

    def __post_init__(self) -> None:
        check_baseline_names(self.baselines)
        if not self.baselines:
            raise UsageError(f"Invalid baselines: none given; name at least one of {', '.join(BASELINES)}")
        if not 0 <= self.test_seed < 2**63:
            raise UsageError(f"Invalid test_seed: {self.test_seed}; use an integer from 0 to 2^63 - 1")
        for name in ("test_problems", "tuning_problems", "bootstrap", "workers"):
            value = getattr(self, name)
            if value < 1:
                raise UsageError(f"Invalid {name}: {value}; use a positive integer")
        if self.steps < 0:
            raise UsageError(f"Invalid steps: {self.steps}; use a positive integer, or 0")
        check_device_name(self.device)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"Invalid {name}: {value!r}; choose one of {', '.join(choices)}")


def _check_type(name: str, value: Any, hint: type) -> None:
    # bool is an int in Python, and an int is a fine float; nothing else converts silently.
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise UsageError(f"Invalid {name}: {value!r}; expected {hint.__name__}")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as nested dicts of primitives (safe for JSON and checkpoints)."""
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from `to_dict` output, refusing unknown fields."""
    if not isinstance(data, dict):
        raise UsageError(f"Invalid {cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise UsageError(f"Invalid {name}: {value!r}; expected a list")
            item = typing.get_args(hint)[0]  # tuple[item, ...]
            for element in value:
                try:
                    _check_type(name, element, item)
                except UsageError:
                    raise UsageError(f"Invalid {name}: {value!r}; expected a list of {item.__name__}") from None
            value = tuple(value)
        elif hint in (int, float, str, bool):
            _check_type(name, value, hint)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
