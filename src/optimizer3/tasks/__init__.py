"""Task families by name: what the learned optimizer is meta-trained and evaluated on."""

from __future__ import annotations

import dataclasses

from optimizer3.errors import UsageError
from optimizer3.tasks.base import Task, TaskFamily
from optimizer3.tasks.quadratic import QuadraticFamily

TASK_FAMILIES = {
    "quadratic": QuadraticFamily,
}


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """Which task family, and its size."""

    name: str = dataclasses.field(
        default="quadratic",
        metadata={"help": "task family", "choices": tuple(TASK_FAMILIES), "flag": "task"},
    )
    dim: int = dataclasses.field(default=10, metadata={"help": "dimension of each quadratic"})

    def __post_init__(self) -> None:
        if self.name not in TASK_FAMILIES:
            raise UsageError(
                f"Unknown task: {self.name!r}; choose one of {', '.join(TASK_FAMILIES)}"
            )
        if self.dim < 1:
            raise UsageError(f"Invalid dim: {self.dim}; use a positive integer")


def make_task_family(config: TaskConfig) -> TaskFamily:
    """The task family that `config` names."""
    return TASK_FAMILIES[config.name](dim=config.dim)


__all__ = ["TASK_FAMILIES", "Task", "TaskConfig", "TaskFamily", "make_task_family"]
