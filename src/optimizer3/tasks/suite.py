"""The benchmark suite: named tasks from every task family, split into the tasks a learned
optimizer may be meta-trained on and the tasks held out from meta-training.

The meta-training set is what the shipped optimizers were meta-trained on (MNIST MLPs of
sigmoid and ReLU units, quadratics of dimension 10) and the cheap 8x8 MNIST MLPs that a new
optimizer may be meta-trained on. Everything else is held out, and the held-out set has what
the meta-training set lacks entirely: other data (Fashion-MNIST, text), other architectures
(convolutional networks, a transformer language model, logistic regression), other activations
(tanh, GELU), and quadratics of other dimensions, scales and conditioning. No shipped optimizer
may be meta-trained on a held-out task; `optimizer3 benchmark` prints the split in every report.

Every task runs on its family's held-out data (`split="heldout"`: images and text that
meta-training never reads). A long-horizon variant runs a task for 10 times the 100 steps
that the shipped optimizers were meta-trained for.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from optimizer3.errors import UsageError
from optimizer3.runtime import device_from_name
from optimizer3.tasks.base import TaskFamily

META_TRAINING = "meta-training"
HELD_OUT = "held-out"
META_TRAINING_HORIZON = 100  # the unroll the shipped optimizers were meta-trained on
LONG = 10  # a long-horizon variant runs this many times longer

DataDir = str | os.PathLike[str] | None


@dataclasses.dataclass(frozen=True)
class SuiteTask:
    """One benchmark task: a task family at its settings, horizon and number of problems."""

    name: str
    family: str  # the kind of model, for grouping: quadratic, MLP, logistic, CNN, transformer
    description: str
    split: str  # META_TRAINING or HELD_OUT
    steps: int
    problems: int  # test problems
    tuning_problems: int  # validation problems that tune the baselines' learning rates
    make: Callable[[DataDir, str, str], TaskFamily] = dataclasses.field(repr=False, compare=False)
    data: str | None = None  # the data set, if any: mnist, fashion-mnist, text
    activation: str | None = None  # the hidden units' activation, if any
    long: bool = False  # a long-horizon variant

    def family_of(self, data_dir: DataDir = None, device: str = "cpu", split: str = "heldout") -> TaskFamily:
        """The task family, on the held-out part of its data (what the benchmark runs), or on
        the meta-training part (`split="train"`: what meta-training on this task reads)."""
        return self.make(data_dir, device, split)

    def scaled(self, steps: int, problems: int, tuning_problems: int) -> "SuiteTask":
        return dataclasses.replace(self, steps=steps, problems=problems, tuning_problems=tuning_problems)


# Each maker imports its family when called: listing the suite loads no family and no data.
def _quadratic(dim: int, scale: tuple[float, float] = (0.0, 0.0), condition: float = 0.0):
    def make(data_dir: DataDir, device: str, split: str) -> TaskFamily:
        from optimizer3.tasks.quadratic import QuadraticFamily

        del split  # quadratics are drawn, not read
        return QuadraticFamily(dim=dim, scale_decades=scale, condition_decades=condition, device=device_from_name(device))
    return make


def _images(name: str, size: int, data_dir: DataDir, device: str):
    from optimizer3.tasks.images import downsample, load_images, on_device

    data = load_images(name, data_dir)
    return on_device(downsample(data, size) if size != 28 else data, device_from_name(device))


def _mlp(data: str, size: int, hidden: tuple[int, ...], activation: str):
    def make(data_dir: DataDir, device: str, split: str) -> TaskFamily:
        from optimizer3.tasks.mlp import MLPFamily

        return MLPFamily(_images(data, size, data_dir, device), hidden=hidden, activation=activation, split=split)
    return make


def _conv(data: str, size: int, batch_size: int):
    def make(data_dir: DataDir, device: str, split: str) -> TaskFamily:
        from optimizer3.tasks.conv import ConvFamily

        return ConvFamily(_images(data, size, data_dir, device), batch_size=batch_size, split=split)
    return make


def _char_lm(batch_size: int):
    def make(data_dir: DataDir, device: str, split: str) -> TaskFamily:
        from optimizer3.tasks.char_lm import CharLMFamily
        from optimizer3.tasks.text import load_corpus

        corpus, place = load_corpus(data_dir), device_from_name(device)
        if place.type != "cpu":
            corpus = dataclasses.replace(corpus, **{part: getattr(corpus, part).to(place)
                                                    for part in ("train", "heldout", "test")})
        return CharLMFamily(corpus, batch_size=batch_size, split=split)
    return make


def _tasks() -> list[SuiteTask]:
    """The default suite, then the long-horizon variants."""
    m, h = META_TRAINING, HELD_OUT
    tasks = [
        SuiteTask("quadratic-10", "quadratic", "‖Wθ−y‖², dimension 10 (the paper's)", m, 100, 256, 128, _quadratic(10)),
        SuiteTask("mnist-mlp-sigmoid", "MLP", "MNIST, 784-20-10 sigmoid (the paper's)", m, 100, 12, 8,
                  _mlp("mnist", 28, (20,), "sigmoid"), "mnist", "sigmoid"),
        SuiteTask("mnist-mlp-relu", "MLP", "MNIST, 784-20-10 ReLU", m, 100, 12, 8, _mlp("mnist", 28, (20,), "relu"), "mnist", "relu"),
        SuiteTask("mnist8-mlp-sigmoid", "MLP", "MNIST 8x8, 64-32-10 sigmoid", m, 100, 32, 16,
                  _mlp("mnist", 8, (32,), "sigmoid"), "mnist", "sigmoid"),
        SuiteTask("mnist8-mlp-relu", "MLP", "MNIST 8x8, 64-32-32-10 ReLU", m, 100, 32, 16,
                  _mlp("mnist", 8, (32, 32), "relu"), "mnist", "relu"),
        SuiteTask("quadratic-2", "quadratic", "dimension 2", h, 100, 256, 128, _quadratic(2)),
        SuiteTask("quadratic-100", "quadratic", "dimension 100", h, 100, 64, 32, _quadratic(100)),
        SuiteTask("quadratic-scaled", "quadratic", "dimension 10, W scaled by 10^u, u ~ U(-2, 2)", h, 100, 256, 128,
                  _quadratic(10, scale=(-2.0, 2.0))),
        SuiteTask("quadratic-ill", "quadratic", "dimension 10, columns of W scaled over 3 decades (ill-conditioned)", h, 100, 256, 128,
                  _quadratic(10, condition=3.0)),
        SuiteTask("mnist-mlp-tanh", "MLP", "MNIST, 784-20-10 tanh", h, 100, 12, 8, _mlp("mnist", 28, (20,), "tanh"), "mnist", "tanh"),
        SuiteTask("mnist8-mlp-gelu", "MLP", "MNIST 8x8, 64-32-32-10 GELU", h, 100, 32, 16,
                  _mlp("mnist", 8, (32, 32), "gelu"), "mnist", "gelu"),
        SuiteTask("fashion-mlp-relu", "MLP", "Fashion-MNIST, 784-32-10 ReLU", h, 100, 12, 8,
                  _mlp("fashion-mnist", 28, (32,), "relu"), "fashion-mnist", "relu"),
        SuiteTask("mnist-logistic", "logistic", "MNIST, logistic regression (convex)", h, 100, 12, 8,
                  _mlp("mnist", 28, (), "relu"), "mnist"),
        SuiteTask("fashion8-logistic", "logistic", "Fashion-MNIST 8x8, logistic regression (convex)", h, 100, 32, 16,
                  _mlp("fashion-mnist", 8, (), "relu"), "fashion-mnist"),
        SuiteTask("mnist-cnn", "CNN", "MNIST, conv 8-16 stride 2, ReLU, average pool, batch 32", h, 100, 8, 4,
                  _conv("mnist", 28, 32), "mnist", "relu"),
        SuiteTask("fashion-cnn", "CNN", "Fashion-MNIST, conv 8-16 stride 2, ReLU, average pool, batch 32", h, 100, 8, 4,
                  _conv("fashion-mnist", 28, 32), "fashion-mnist", "relu"),
        SuiteTask("text-transformer", "transformer", "Python docs characters, 1-layer transformer LM, 16 windows of 32", h, 100, 8, 4,
                  _char_lm(16), "text", "gelu"),
    ]
    long = [
        ("quadratic-10", 64, 32), ("mnist8-mlp-relu", 8, 4), ("mnist8-mlp-gelu", 8, 4), ("fashion8-logistic", 8, 4),
        ("fashion-cnn", 4, 2), ("text-transformer", 4, 2),
    ]
    by_name = {task.name: task for task in tasks}
    return tasks + [
        dataclasses.replace(by_name[name], name=f"{name}-long", steps=LONG * by_name[name].steps,
                            problems=problems, tuning_problems=tuning, long=True,
                            description=by_name[name].description + f", {LONG}x horizon")
        for name, problems, tuning in long
    ]


SUITE: dict[str, SuiteTask] = {task.name: task for task in _tasks()}
FAMILIES = tuple(dict.fromkeys(task.family for task in SUITE.values()))


def default_tasks(long: bool = False) -> tuple[str, ...]:
    """The names of the default suite, with the long-horizon variants if `long`."""
    return tuple(name for name, task in SUITE.items() if long or not task.long)


def select(spec: str | None, long: bool = False) -> tuple[str, ...]:
    """The task names that `spec` picks: task or family names joined by commas (a family picks
    its tasks, long ones with `long`), or None for the default suite."""
    if spec is None:
        return default_tasks(long)
    chosen: list[str] = []
    for item in spec.split(","):
        if item in SUITE:
            chosen.append(item)
        elif item in FAMILIES:
            chosen.extend(name for name, task in SUITE.items() if task.family == item and (long or not task.long))
        else:
            raise UsageError(
                f"Unknown benchmark task or family: {item!r}; choose from the families {', '.join(FAMILIES)} "
                f"or the tasks {', '.join(SUITE)} (joined by commas)")
    return tuple(dict.fromkeys(chosen))


def split_text() -> str:
    """The split, as every report prints it."""
    lines = []
    for split in (META_TRAINING, HELD_OUT):
        names = [name for name, task in SUITE.items() if task.split == split and not task.long]
        lines.append(f"{split} set: {', '.join(names)}")
    return "\n".join(lines)
