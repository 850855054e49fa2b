"""The settings of a meta-training experiment: task, architecture, and how it is meta-trained.

How the run computes (device, threads, processes, compilation, precision, memory) is not here
but in `runtime.RuntimeConfig`: a checkpoint stores this config, and a resumed run may compute
differently without being another experiment.
"""

from __future__ import annotations

import dataclasses

from optimizer3.configs import check_choice, check_positive, field
from optimizer3.errors import UsageError
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.learned.mlp import MLPOptimizerConfig
from optimizer3.tasks import TaskConfig
from optimizer3.tasks.mlp import activation_names

LOSS_WEIGHTINGS = ("uniform", "linear", "final")
LR_SCHEDULES = ("cosine", "constant")
META_OBJECTIVES = ("loss", "log_loss")


@dataclasses.dataclass(frozen=True)
class MetaTrainConfig:
    """Truncated-BPTT meta-training of the LSTM optimizer on a task family."""

    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    optimizer: LSTMOptimizerConfig = dataclasses.field(default_factory=LSTMOptimizerConfig)
    horizon: int = field(100, "optimizee steps per trajectory")
    unroll: int = field(20, "steps per truncation: one meta-update each; must divide horizon")
    problems: int = field(128, "problems per trajectory (the meta-batch)")
    trajectories: int = field(300, "trajectories, each on freshly sampled problems")
    meta_lr: float = field(0.01, "Adam learning rate of the meta-optimizer")
    lr_schedule: str = field("cosine", "meta learning-rate schedule over the run", choices=LR_SCHEDULES)
    schedule_trajectories: int = field(
        0, "trajectories that the cosine schedule spans, when the run is to stop before its end "
        "(a stage cut where a longer run's best came, at the learning rate it had there); 0: the "
        "run's --trajectories")
    average_decay: float = field(
        0.0, "validate, keep as the best and export an exponential moving average of the "
        "meta-parameters, updated after every meta-step with this decay in (0, 1) (Polyak "
        "averaging); 0: the meta-parameters themselves")
    clip_grad_norm: float = field(1.0, "clip the meta-gradient's norm to this; 0 disables")
    loss_weights: str = field(
        "uniform", "meta-loss weight w_t of the loss after step t: uniform (w_t = 1, the paper's), "
        "linear (w_t = t / horizon) or final (only the last step)", choices=LOSS_WEIGHTINGS)
    meta_objective: str = field(
        "loss", "what the meta-loss sums over steps: loss (the paper's) or log_loss (the log of each "
        "problem's loss plus 1e-8, so that halving a small loss counts as much as halving a large one)",
        choices=META_OBJECTIVES)
    second_order: bool = field(False, "keep the optimizee's second derivatives in the meta-gradient (slower)")
    loss_clip: float = field(
        0.0, "clip each problem's loss in the meta-loss at this multiple of its initial loss, and "
        "count a non-finite loss as that cap; 0 disables")
    max_skips: int = field(
        10, "stop after this many trajectories in a row ended in a meta-update skipped for a "
        "non-finite meta-loss or meta-gradient")
    validation_problems: int = field(500, "fixed validation problems for early stopping")
    validate_every: int = field(25, "validate every this many trajectories")
    checkpoint_every: int = field(5, "save a checkpoint every this many trajectories")
    seed: int = field(0, "seed of meta-parameter initialization and training problems")
    validation_seed: int = field(1, "seed of the validation problems")
    init_from: str = field(
        "", "start from these meta-parameters instead of random ones: a shipped pretrained name, a "
        "learned-optimizer file or a training checkpoint (its best); empty: a random start")

    def __post_init__(self) -> None:
        check_positive(self, "horizon", "unroll", "problems", "trajectories", "validation_problems",
                       "validate_every", "checkpoint_every", "max_skips")
        if self.schedule_trajectories and self.schedule_trajectories < self.trajectories:
            raise UsageError(
                f"Invalid schedule_trajectories: {self.schedule_trajectories} is fewer than the run's "
                f"{self.trajectories} trajectories; use 0 or at least {self.trajectories}")
        if self.schedule_trajectories and self.lr_schedule != "cosine":
            raise UsageError(
                f"schedule_trajectories ({self.schedule_trajectories}) sets the length of the cosine "
                f"schedule, and this run's is {self.lr_schedule!r}; drop it or use the cosine schedule")
        if self.horizon % self.unroll:
            raise UsageError(f"Invalid unroll: {self.unroll} does not divide the horizon {self.horizon}; "
                             "choose an unroll that does")
        if not self.meta_lr > 0:
            raise UsageError(f"Invalid meta learning rate: {self.meta_lr}; use a positive number")
        if self.loss_clip < 0:
            raise UsageError(f"Invalid loss_clip: {self.loss_clip}; use 0 (off) or a positive multiple")
        if isinstance(self.average_decay, bool) or not 0 <= self.average_decay < 1:
            raise UsageError(f"Invalid average_decay: {self.average_decay!r}; use 0 (off) or a number in (0, 1), e.g. 0.9")
        if self.clip_grad_norm < 0:
            raise UsageError(f"Invalid clip_grad_norm: {self.clip_grad_norm}; use 0 or more")
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("loss_weights", self.loss_weights, LOSS_WEIGHTINGS)
        check_choice("meta_objective", self.meta_objective, META_OBJECTIVES)
        self._check_kinds()
        if self.seed == self.validation_seed:
            raise UsageError(f"The training and validation seeds are both {self.seed}; make them differ")

    def _check_kinds(self) -> None:
        """A family that mixes kinds of network needs as many instances of each."""
        kinds = self.task.kinds if self.task.name == "mnist" else 1
        mixed = (f"the activations in {self.task.activation!r}" if len(activation_names(self.task.activation)) > 1
                 else f"the architectures of --hidden and --mix-hidden {' '.join(self.task.mix_hidden)}")
        for name in ("problems", "validation_problems"):
            if getattr(self, name) % kinds:
                raise UsageError(f"Invalid {name}: {getattr(self, name)} is not a multiple of {kinds}, {mixed}; "
                                 "use a multiple, so that each kind has as many instances")


# The benchmark's meta-training tasks that PES meta-training mixes by default: the cheap ones
# (quadratics of dimension 10 and the 8x8 MNIST MLPs) and the paper's 28x28 MNIST MLPs.
MIX_TASKS = ("quadratic-10", "mnist8-mlp-sigmoid", "mnist8-mlp-relu", "mnist-mlp-sigmoid", "mnist-mlp-relu")


@dataclasses.dataclass(frozen=True)
class PESTrainConfig:
    """Meta-training of the per-parameter MLP optimizer by persistent evolution strategies on
    a mix of the benchmark's meta-training tasks."""

    optimizer: MLPOptimizerConfig = dataclasses.field(default_factory=MLPOptimizerConfig)
    tasks: tuple[str, ...] = field(
        MIX_TASKS, "benchmark tasks of the meta-training set to sample each chain's problems from", type=str)
    pairs: int = field(16, "antithetic pairs of perturbations per chain: each pair optimizes one problem twice")
    sigma: float = field(0.01, "standard deviation of the perturbations of the meta-parameters")
    truncation: int = field(10, "optimizee steps per truncation: one meta-update each")
    min_horizon: int = field(100, "shortest chain: a chain's length is drawn log-uniformly in [min, max]")
    max_horizon: int = field(1000, "longest chain (rounded down to a multiple of --truncation)")
    meta_steps: int = field(1200, "meta-updates in the whole run")
    meta_lr: float = field(1e-3, "Adam learning rate of the meta-optimizer (cosine decay to a tenth)")
    clip_grad_norm: float = field(1.0, "clip the meta-gradient estimate's norm to this; 0 disables")
    normalize_differences: bool = field(
        True, "divide each truncation's estimate by the root mean square of its pairs' differences "
        "L+ - L-, so that every task of the mix weighs alike in the meta-updates")
    parameter_decades: float = field(
        1.0, "task augmentation: each parameter tensor of each problem is reparameterized by a factor "
        "10^u, u ~ U(-d, d); 0: none")
    loss_decades: float = field(2.0, "task augmentation: each problem's loss is multiplied by 10^u, u ~ U(-d, d)")
    loss_floor: float = field(1e-4, "the meta-loss is the mean of log(loss + floor) over a truncation's steps")
    validation_problems: int = field(8, "fixed validation problems per task (quadratics: 8 times as many)")
    validation_steps: int = field(200, "steps of each validation run")
    validate_every: int = field(100, "validate every this many meta-updates (at the end of the chain they fall in)")
    max_skips: int = field(20, "stop after this many chains in a row ended early without a finite estimate")
    seed: int = field(0, "seed of the meta-parameters, problems, perturbations and augmentation")
    validation_seed: int = field(1, "seed of the validation problems")

    def __post_init__(self) -> None:
        check_positive(self, "pairs", "truncation", "min_horizon", "max_horizon", "meta_steps",
                       "validation_problems", "validation_steps", "validate_every", "max_skips")
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if not self.tasks:
            raise UsageError("Invalid tasks: none given; name one or more tasks of the benchmark's meta-training set")
        from optimizer3.tasks.suite import META_TRAINING, SUITE

        for name in self.tasks:
            if name not in SUITE or SUITE[name].split != META_TRAINING or SUITE[name].long:
                allowed = ", ".join(n for n, t in SUITE.items() if t.split == META_TRAINING and not t.long)
                raise UsageError(f"Invalid meta-training task: {name!r}; PES meta-trains only on the benchmark's "
                                 f"meta-training set: {allowed}")
        if self.min_horizon > self.max_horizon or self.max_horizon < self.truncation:
            raise UsageError(f"Invalid horizons: min {self.min_horizon}, max {self.max_horizon}, truncation "
                             f"{self.truncation}; use min <= max and max >= truncation")
        for name in ("sigma", "meta_lr", "loss_floor"):
            if not getattr(self, name) > 0:
                raise UsageError(f"Invalid {name}: {getattr(self, name)}; use a positive number")
        for name in ("clip_grad_norm", "parameter_decades", "loss_decades"):
            if not getattr(self, name) >= 0:
                raise UsageError(f"Invalid {name}: {getattr(self, name)}; use 0 or more")
        if self.seed == self.validation_seed:
            raise UsageError(f"The training and validation seeds are both {self.seed}; make them differ")
