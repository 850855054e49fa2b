"""Task families by name: what the learned optimizer is meta-trained and evaluated on."""

from __future__ import annotations

import dataclasses
import os

from optimizer3.runtime import device_from_name
from optimizer3.errors import UsageError
from optimizer3.tasks.base import Task, TaskFamily
from optimizer3.tasks.mlp import MLPFamily, activation_names, parse_hidden
from optimizer3.tasks.images import load_mnist, on_device
from optimizer3.tasks.quadratic import QuadraticFamily

TASK_NAMES = ("quadratic", "mnist")
SPLITS = ("train", "heldout")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which task family, and its settings (`dim` for quadratics, the rest for MNIST MLPs)."""

    name: str = dataclasses.field(
        default="quadratic",
        metadata={"help": "task family", "choices": TASK_NAMES, "flag": "task"},
    )
    dim: int = dataclasses.field(default=10, metadata={"help": "dimension of each quadratic"})
    hidden: tuple[int, ...] = dataclasses.field(
        default=(20,), metadata={"help": "MNIST: hidden layer sizes of the MLP", "type": int}
    )
    mix_hidden: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata={"help": "MNIST: more architectures, each its hidden-layer sizes joined by commas without "
                          "spaces (20,20 is two layers of 20), for a family whose instance i takes the "
                          "(i mod n)-th of --hidden and these; one activation only. A row of parameters "
                          "is the largest architecture's, padded, so mixing sizes costs time",
                  "type": str},
    )
    activation: str = dataclasses.field(
        default="sigmoid",
        metadata={"help": "MNIST: hidden activation, sigmoid, relu or tanh; several joined by commas "
                          "without spaces (sigmoid,relu) make a family whose instance i takes the "
                          "(i mod n)-th (a repeated name weights it)"},
    )
    batch_size: int = dataclasses.field(default=128, metadata={"help": "MNIST: minibatch size"})
    init_scale: float = dataclasses.field(
        default=1.0, metadata={"help": "MNIST: weights start N(0, (init_scale / sqrt(fan_in))^2)"}
    )

    @property
    def kinds(self) -> int:
        """How many kinds of network a family of this task alternates between (1: no mixing)."""
        return len(activation_names(self.activation)) * (1 + len(self.mix_hidden))

    def __post_init__(self) -> None:
        if self.name not in TASK_NAMES:
            raise UsageError(f"Unknown task: {self.name!r}; choose one of {', '.join(TASK_NAMES)}")
        if self.dim < 1:
            raise UsageError(f"Invalid dim: {self.dim}; use a positive integer")
        if not self.hidden or any(size < 1 for size in self.hidden):
            raise UsageError(f"Invalid hidden layer sizes: {list(self.hidden)}; use positive sizes")
        activation_names(self.activation)
        for spec in self.mix_hidden:
            parse_hidden(spec)
        if self.mix_hidden and len(activation_names(self.activation)) > 1:
            raise UsageError(
                f"--mix-hidden {' '.join(self.mix_hidden)} with --activation {self.activation}: a family mixes "
                "architectures or activations, not both; give one activation or leave out --mix-hidden"
            )
        if self.batch_size < 1:
            raise UsageError(f"Invalid batch_size: {self.batch_size}; use a positive integer")
        if not self.init_scale > 0:
            raise UsageError(f"Invalid init_scale: {self.init_scale}; use a positive number")


def make_task_family(
    config: TaskConfig,
    split: str = "train",
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> TaskFamily:
    """The task family that `config` names, whose tasks compute on `device`.

    Args:
      config: the task's settings.
      split: "train" for meta-training, "heldout" for validation, tuning and evaluation; tasks
        without data ignore it.
      data_dir: where to look for data first (see `optimizer3.tasks.images`).
      device: where the tasks' tensors live (`optimizer3.runtime`); data is copied there once.
    """
    if split not in SPLITS:
        raise UsageError(f"Unknown split: {split!r}; choose one of {', '.join(SPLITS)}")
    place = device_from_name(str(device))
    if config.name == "quadratic":
        return QuadraticFamily(dim=config.dim, device=place)
    return MLPFamily(
        on_device(load_mnist(data_dir), place), hidden=config.hidden,
        mix_hidden=tuple(parse_hidden(spec) for spec in config.mix_hidden), activation=config.activation,
        batch_size=config.batch_size, init_scale=config.init_scale, split=split,
    )


__all__ = ["TASK_NAMES", "Task", "TaskConfig", "TaskFamily", "make_task_family"]
