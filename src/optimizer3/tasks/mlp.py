"""Multi-layer perceptrons on images, many independent instances trained as one computation.

Each instance has its own initial weights and its own minibatches; the parameters of all
instances are the rows of one `[instances, parameters]` tensor and every layer is one batched
matrix product, so the learned optimizer sees one row per coordinate per instance.

References: Andrychowicz et al. 2016, section 3.2.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.batched import SideBySide, stack
from optimizer3.tasks.classifiers import ACTIVATIONS, CLASSES, activation_names, check_split, split_images
from optimizer3.tasks.images import ImageData


def parse_hidden(spec: str) -> tuple[int, ...]:
    """The hidden-layer sizes that `spec` writes joined by commas ("20,20": two layers of 20)."""
    try:
        sizes = tuple(int(size) for size in spec.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(size < 1 for size in sizes):
        raise UsageError(
            f"Invalid architecture: {spec!r}; write positive hidden-layer sizes joined by commas "
            "without spaces (20,20 is two layers of 20)"
        )
    return sizes


def activate(x: torch.Tensor, names: tuple[str, ...], first: int = 0) -> torch.Tensor:
    """Each instance's activation applied to x [copies, instances, examples, units]: instance i,
    counted from `first`, takes the (i mod n)-th of the n names, each computed on its own
    instances only."""
    if len(names) == 1:
        return ACTIVATIONS[names[0]](x)
    out = torch.empty_like(x)
    for index, name in enumerate(names):
        begin = (index - first) % len(names)
        out[:, begin :: len(names)] = ACTIVATIONS[name](x[:, begin :: len(names)])
    return out


def layer_shapes(inputs: int, hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every layer, the output layer last (the only one if `hidden` is
    empty: multinomial logistic regression)."""
    sizes = (inputs, *hidden, CLASSES)
    return list(zip(sizes[:-1], sizes[1:]))


@dataclasses.dataclass(frozen=True)
class MLPTask:
    """`num_problems` MLP instances on one split of the images."""

    test_metric_name = "test accuracy"

    images: torch.Tensor
    labels: torch.Tensor
    num_problems: int
    hidden: tuple[int, ...]
    activation: str
    batch_size: int
    init_scale: float
    test_images: torch.Tensor
    test_labels: torch.Tensor
    first_instance: int = 0  # the number of the first instance (its activation, in a mixed family)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        return layer_shapes(self.images.shape[1], self.hidden)

    @property
    def dim(self) -> int:
        return sum(fan_in * fan_out + fan_out for fan_in, fan_out in self.shapes)

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each layer's weight (fan_in, fan_out) and bias (fan_out,), in the row's order."""
        return tuple(shape for fan_in, fan_out in self.shapes for shape in ((fan_in, fan_out), (fan_out,)))

    @property
    def chance_loss(self) -> float:
        return math.log(CLASSES)

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """Weights N(0, (init_scale / sqrt(fan_in))²) and zero biases, for every instance.

        Drawn by the CPU `generator` on every device, then moved to the images' device.
        """
        pieces = []
        for fan_in, fan_out in self.shapes:
            std = self.init_scale / math.sqrt(fan_in)
            pieces.append(torch.randn(self.num_problems, fan_in * fan_out, generator=generator) * std)
            pieces.append(torch.zeros(self.num_problems, fan_out))
        return torch.cat(pieces, dim=1).to(self.images.device)

    def rows(self, start: int, stop: int) -> "MLPTask":
        """Instances start..stop-1 as a task of their own (each keeps its activation)."""
        return dataclasses.replace(self, num_problems=stop - start, first_instance=self.first_instance + start)

    def sample_batch(self, generator: torch.Generator) -> torch.Tensor:
        """Indices of each instance's own minibatch, shape [instances, batch_size] (drawn on the
        CPU, placed with the images)."""
        indices = torch.randint(0, len(self.labels), (self.num_problems, self.batch_size), generator=generator)
        return indices.to(self.images.device)

    def logits(self, params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Class scores [instances, examples, 10] for inputs [instances or 1, examples, pixels]."""
        return self.copies_logits([params], inputs)[0]

    def copies_logits(self, params: Sequence[torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
        """Class scores [copies, instances, examples, 10] of several copies of the instances, each
        with its own parameters (`params`: one [instances, dim] tensor per copy), on inputs
        [instances or 1, examples, pixels] that every copy shares."""
        copies, instances = len(params), params[0].shape[0]
        names = activation_names(self.activation)
        # A split, not a slice per layer: its backward writes each gradient once, where a
        # slice's backward fills a zero tensor the size of all the parameters.
        sizes = [size for fan_in, fan_out in self.shapes for size in (fan_in * fan_out, fan_out)]
        pieces = [copy.split(sizes, -1) for copy in params]
        x = inputs
        for layer, (fan_in, fan_out) in enumerate(self.shapes):
            bias = stack([piece[2 * layer + 1] for piece in pieces], 0)
            if layer == 0:
                # The copies of an instance read the same inputs: one product with their weights
                # side by side ([instances, pixels, copies * units]) instead of one per copy.
                # Each copy's columns come out as its own product would (`SideBySide`).
                weight = stack([piece[0].view(instances, fan_in, fan_out) for piece in pieces], 2)
                weight = weight.view(instances, fan_in, copies * fan_out)
                bias = bias.permute(1, 0, 2).reshape(instances, 1, copies * fan_out)
                if x.shape[0] != instances:  # inputs shared by every instance too (test images)
                    x = torch.matmul(x, weight) + bias
                elif copies == 1:
                    x = torch.baddbmm(bias, x, weight)
                else:
                    x = SideBySide.apply(bias, x, weight, copies)
                x = x.view(instances, -1, copies, fan_out).permute(2, 0, 1, 3)
            else:
                rows = copies * instances
                weight = stack([piece[2 * layer].view(instances, fan_in, fan_out) for piece in pieces], 0)
                x = torch.baddbmm(bias.view(rows, 1, fan_out), x.reshape(rows, -1, fan_in),
                                  weight.view(rows, fan_in, fan_out)).view(copies, instances, -1, fan_out)
            if layer != len(self.shapes) - 1:
                x = activate(x, names, self.first_instance)
        return x

    def loss(self, params: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each instance on its own minibatch, shape [instances]."""
        return self.copies_loss([params], batch)[0]

    def copies_loss(self, params: Sequence[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """`loss` of several copies of the instances, each with its own parameters (one
        [instances, dim] tensor per copy), on the same minibatches, shape [copies, instances]:
        each gathered image is read once for all copies."""
        # index_select on the flat indices gathers the same rows as images[batch], four times
        # faster for the 16 instances of a tuning run on a CPU (measured 2026-11-28).
        flat = batch.reshape(-1)
        inputs = self.images.index_select(0, flat).view(*batch.shape, -1)
        logits = self.copies_logits(params, inputs)
        labels = self.labels.index_select(0, flat).repeat(len(params))
        losses = F.cross_entropy(logits.reshape(-1, CLASSES), labels, reduction="none")
        return losses.view(len(params), self.num_problems, -1).mean(dim=2)

    @torch.no_grad()
    def test_accuracy(self, params: torch.Tensor) -> torch.Tensor:
        """Fraction of the test images each instance classifies correctly, shape [instances]."""
        predictions = self.logits(params, self.test_images.unsqueeze(0)).argmax(dim=-1)
        return (predictions == self.test_labels).float().mean(dim=1)

    def test_metric(self, params: torch.Tensor) -> torch.Tensor:
        """The benchmark's test metric: `test_accuracy`."""
        return self.test_accuracy(params)


@dataclasses.dataclass(frozen=True)
class MixedMLPTask:
    """`num_problems` MLP instances of several architectures: instance i, counted from
    `first_instance`, has the hidden layers `architectures[i mod n]` (a family that mixes depths
    or widths, as `activation_names` mixes activations).

    Every instance's parameters are one row of an [instances, dim] tensor, `dim` the largest
    architecture's: an instance's MLP reads the first entries of its row (in `MLPTask`'s
    layout) and the rest is padding that no loss reads, so its gradient is zero. The learned
    optimizer still runs on the padding: a row costs it the largest architecture's time. It has
    no `parameter_shapes`: its instances' shapes differ.
    """

    test_metric_name = "test accuracy"
    chance_loss = math.log(CLASSES)

    base: MLPTask  # the data, activation, batch size and initialization that all instances share
    architectures: tuple[tuple[int, ...], ...]
    num_problems: int
    first_instance: int = 0

    @property
    def dim(self) -> int:
        return max(dataclasses.replace(self.base, hidden=hidden).dim for hidden in self.architectures)

    def parts(self) -> list[tuple[slice, MLPTask]]:
        """Each architecture's instances: their rows (every n-th) and their `MLPTask`."""
        n, parts = len(self.architectures), []
        for index, hidden in enumerate(self.architectures):
            begin = (index - self.first_instance) % n
            count = len(range(begin, self.num_problems, n))
            if count:
                task = dataclasses.replace(self.base, hidden=hidden, num_problems=count, first_instance=0)
                parts.append((slice(begin, None, n), task))
        return parts

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """Each architecture's instances initialized as its `MLPTask.init` does, in the order of
        `architectures`; zero padding."""
        params = torch.zeros(self.num_problems, self.dim, device=self.base.images.device)
        for rows, task in self.parts():
            params[rows, : task.dim] = task.init(generator)
        return params

    def rows(self, start: int, stop: int) -> "MixedMLPTask":
        """Instances start..stop-1 as a task of their own (each keeps its architecture)."""
        return dataclasses.replace(self, num_problems=stop - start, first_instance=self.first_instance + start)

    def sample_batch(self, generator: torch.Generator) -> torch.Tensor:
        return dataclasses.replace(self.base, num_problems=self.num_problems).sample_batch(generator)

    def loss(self, params: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each instance on its own minibatch, shape [instances]."""
        return self.copies_loss([params], batch)[0]

    def copies_loss(self, params: Sequence[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """`MLPTask.copies_loss` for every architecture's instances, shape [copies, instances]."""
        losses = params[0].new_empty(len(params), self.num_problems)
        for rows, task in self.parts():
            losses[:, rows] = task.copies_loss([copy[rows, : task.dim] for copy in params], batch[rows])
        return losses

    @torch.no_grad()
    def test_accuracy(self, params: torch.Tensor) -> torch.Tensor:
        """Fraction of the test images each instance classifies correctly, shape [instances]."""
        accuracy = params.new_empty(self.num_problems)
        for rows, task in self.parts():
            accuracy[rows] = task.test_accuracy(params[rows, : task.dim])
        return accuracy

    def test_metric(self, params: torch.Tensor) -> torch.Tensor:
        """The benchmark's test metric: `test_accuracy`."""
        return self.test_accuracy(params)


@dataclasses.dataclass(frozen=True)
class MLPFamily:
    """MLPs on the meta-training or the held-out part of a training set of images (MNIST,
    Fashion-MNIST, downsampled images: any `ImageData`).

    The last `heldout` training images are never used for meta-training; evaluation trains the
    optimizee on them, and measures its accuracy on the test images. `hidden=()`: no hidden
    layer, multinomial logistic regression (a convex problem). With `mix_hidden`,
    the instances alternate between the architectures `hidden`, *`mix_hidden` (`MixedMLPTask`).
    """

    data: ImageData
    hidden: tuple[int, ...] = (20,)
    mix_hidden: tuple[tuple[int, ...], ...] = ()
    activation: str = "sigmoid"
    batch_size: int = 128
    init_scale: float = 1.0
    split: str = "train"
    heldout: int = 10000

    def __post_init__(self) -> None:
        if any(size < 1 for size in self.hidden):
            raise UsageError(f"Invalid hidden layer sizes: {self.hidden}; use positive sizes (none: no hidden layer)")
        activation_names(self.activation)
        if any(size < 1 for sizes in self.mix_hidden for size in sizes):
            raise UsageError(f"Invalid mix_hidden: {self.mix_hidden}; use architectures of positive sizes")
        if self.mix_hidden and len(activation_names(self.activation)) > 1:
            raise UsageError(
                f"A family cannot mix activations ({self.activation!r}) and architectures at once; "
                "give one activation, or leave out mix_hidden"
            )
        check_split(self.data, self.split, self.heldout, self.batch_size)
        if not self.init_scale > 0:
            raise UsageError(f"Invalid init_scale: {self.init_scale}; use a positive number")

    def sample(self, num_problems: int, generator: torch.Generator) -> MLPTask | MixedMLPTask:
        if num_problems < 1:
            raise UsageError(f"Invalid number of problems: {num_problems}; use 1 or more")
        del generator  # instances differ by their init and minibatches, drawn later
        images, labels = split_images(self.data, self.split, self.heldout)
        task = MLPTask(images, labels, num_problems, self.hidden, self.activation,
                       self.batch_size, self.init_scale, self.data.test_images, self.data.test_labels)
        if not self.mix_hidden:
            return task
        return MixedMLPTask(task, (self.hidden, *self.mix_hidden), num_problems)
