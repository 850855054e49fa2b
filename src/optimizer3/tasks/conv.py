"""Small convolutional networks on square grey images, many instances trained as one computation.

Every instance has its own initial weights and its own minibatches. The instances' channels
stand side by side in one convolution's channels and `groups` keeps them apart (group i sees
only instance i's channels, with instance i's kernels), so K instances cost one convolution per
layer, not K. A network: convolutions of stride 2 and padding 1, each followed by the
activation, global average pooling, and a linear layer to the 10 classes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.classifiers import ACTIVATIONS, CLASSES, check_split, split_images
from optimizer3.tasks.images import ImageData

# Test images per chunk in `test_accuracy`: at most this many numbers in the first layer's output.
TEST_CHUNK_NUMBERS = 2**24


def conv_sides(side: int, kernel: int, layers: int) -> list[int]:
    """The side of the image entering each layer and of the last layer's output (stride 2, padding 1)."""
    sides = [side]
    for _ in range(layers):
        sides.append((sides[-1] + 2 - kernel) // 2 + 1)
    return sides


@dataclasses.dataclass(frozen=True)
class ConvTask:
    """`num_problems` convolutional network instances on one split of the images."""

    images: torch.Tensor  # [count, side * side]
    labels: torch.Tensor
    num_problems: int
    channels: tuple[int, ...]
    kernel: int
    activation: str
    batch_size: int
    init_scale: float
    test_images: torch.Tensor
    test_labels: torch.Tensor

    test_metric_name = "test accuracy"
    chance_loss = math.log(CLASSES)

    @property
    def side(self) -> int:
        return math.isqrt(self.images.shape[1])

    @property
    def parameter_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Each convolution's kernel (out_channels, in_channels * k * k) and bias (out_channels,),
        then the linear layer's weight (channels, 10) and bias (10,), in the row's order."""
        shapes, inputs = [], 1
        for outputs in self.channels:
            shapes += [(outputs, inputs * self.kernel**2), (outputs,)]
            inputs = outputs
        return (*shapes, (inputs, CLASSES), (CLASSES,))

    @property
    def dim(self) -> int:
        return sum(math.prod(shape) for shape in self.parameter_shapes)

    def init(self, generator: torch.Generator) -> torch.Tensor:
        """Weights N(0, (init_scale / sqrt(fan_in))²) and zero biases, for every instance.

        Drawn by the CPU `generator` on every device, then moved to the images' device.
        """
        shapes, pieces = self.parameter_shapes, []
        for layer, (weight, bias) in enumerate(zip(shapes[::2], shapes[1::2])):
            fan_in = weight[1] if layer < len(self.channels) else weight[0]
            std = self.init_scale / math.sqrt(fan_in)
            pieces.append(torch.randn(self.num_problems, math.prod(weight), generator=generator) * std)
            pieces.append(torch.zeros(self.num_problems, bias[0]))
        return torch.cat(pieces, dim=1).to(self.images.device)

    def rows(self, start: int, stop: int) -> "ConvTask":
        """Instances start..stop-1 as a task of their own."""
        return dataclasses.replace(self, num_problems=stop - start)

    def sample_batch(self, generator: torch.Generator) -> torch.Tensor:
        """Indices of each instance's own minibatch, shape [instances, batch_size] (drawn on the
        CPU, placed with the images)."""
        indices = torch.randint(0, len(self.labels), (self.num_problems, self.batch_size), generator=generator)
        return indices.to(self.images.device)

    def logits(self, params: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Class scores [instances, examples, 10] of the instances `params` [instances, dim] on
        inputs [instances, examples, pixels] (each instance its own) or [1, examples, pixels]
        (shared by every instance)."""
        instances, act = params.shape[0], ACTIVATIONS[self.activation]
        pieces = params.split([math.prod(shape) for shape in self.parameter_shapes], dim=1)
        side = self.side
        # [examples, instances or 1, side, side]: an instance's channels are its group's.
        x = inputs.view(inputs.shape[0], -1, side, side).transpose(0, 1)
        if x.device.type == "cpu":  # oneDNN's grouped convolutions: a step 12-20% faster (2026-12-05)
            x = x.contiguous(memory_format=torch.channels_last)
        inputs_channels = 1
        for layer, outputs in enumerate(self.channels):
            weight = pieces[2 * layer].reshape(instances * outputs, inputs_channels, self.kernel, self.kernel)
            bias = pieces[2 * layer + 1].reshape(instances * outputs)
            # Shared inputs: the first layer's kernels all read the one grey channel (groups=1).
            groups = instances if x.shape[1] == instances * inputs_channels else 1
            x = act(F.conv2d(x, weight, bias, stride=2, padding=1, groups=groups))
            inputs_channels = outputs
        pooled = x.mean(dim=(2, 3)).view(-1, instances, inputs_channels).transpose(0, 1)
        weight = pieces[-2].view(instances, inputs_channels, CLASSES)
        return torch.baddbmm(pieces[-1].unsqueeze(1), pooled, weight)

    def loss(self, params: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of each instance on its own minibatch, shape [instances]."""
        inputs = self.images.index_select(0, batch.reshape(-1)).view(*batch.shape, -1)
        logits = self.logits(params, inputs)
        labels = self.labels.index_select(0, batch.reshape(-1))
        losses = F.cross_entropy(logits.reshape(-1, CLASSES), labels, reduction="none")
        return losses.view(batch.shape).mean(dim=1)

    def copies_loss(self, params: Sequence[torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        """`loss` of several copies of the instances, each with its own [instances, dim]
        parameters, on the same minibatches, shape [copies, instances]: the copies are more
        instances of one computation, each reading its instance's minibatch."""
        losses = self.loss(torch.cat(list(params)), batch.repeat(len(params), 1))
        return losses.view(len(params), -1)

    @torch.no_grad()
    def test_accuracy(self, params: torch.Tensor) -> torch.Tensor:
        """Fraction of the test images each instance classifies correctly, shape [instances];
        the images are read in chunks, so that memory stays bounded."""
        per_image = params.shape[0] * self.channels[0] * conv_sides(self.side, self.kernel, 1)[1] ** 2
        chunk = max(1, TEST_CHUNK_NUMBERS // per_image)
        correct = torch.zeros(params.shape[0], device=params.device)
        for start in range(0, len(self.test_labels), chunk):
            logits = self.logits(params, self.test_images[start : start + chunk].unsqueeze(0))
            correct += (logits.argmax(dim=-1) == self.test_labels[start : start + chunk]).sum(dim=1)
        return correct / len(self.test_labels)

    def test_metric(self, params: torch.Tensor) -> torch.Tensor:
        """The benchmark's test metric: `test_accuracy`."""
        return self.test_accuracy(params)


@dataclasses.dataclass(frozen=True)
class ConvFamily:
    """Convolutional networks on the meta-training or the held-out part of a training set of
    square grey images (28x28 MNIST or Fashion-MNIST, 8x8 downsampled ones).

    `channels`: the output channels of each convolution (stride 2, padding 1, `kernel` x
    `kernel`); weights start N(0, (init_scale / sqrt(fan_in))²), biases at zero. The last
    `heldout` training images are the "heldout" split, as in `MLPFamily`.

    References: He et al. 2015, "Delving deep into rectifiers", section 2.2 (the initialization).
    """

    data: ImageData
    channels: tuple[int, ...] = (8, 16)
    kernel: int = 3
    activation: str = "relu"
    batch_size: int = 128
    init_scale: float = 1.0
    split: str = "train"
    heldout: int = 10000

    def __post_init__(self) -> None:
        pixels = self.data.train_images.shape[1]
        side = math.isqrt(pixels)
        if side * side != pixels:
            raise UsageError(f"Images of {pixels} pixels are not square; give square grey images (28x28, 8x8)")
        if not self.channels or any(count < 1 for count in self.channels):
            raise UsageError(f"Invalid channels: {self.channels}; use one or more positive channel counts")
        if self.kernel < 1 or min(conv_sides(side, self.kernel, len(self.channels))) < 1:
            raise UsageError(
                f"Invalid kernel size {self.kernel} for {len(self.channels)} layers on {side}x{side} images: "
                "every layer's output must keep a pixel; use a smaller kernel or fewer layers"
            )
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"Unknown activation: {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        check_split(self.data, self.split, self.heldout, self.batch_size)
        if not self.init_scale > 0:
            raise UsageError(f"Invalid init_scale: {self.init_scale}; use a positive number")

    def sample(self, num_problems: int, generator: torch.Generator) -> ConvTask:
        if num_problems < 1:
            raise UsageError(f"Invalid number of problems: {num_problems}; use 1 or more")
        del generator  # instances differ by their init and minibatches, drawn later
        images, labels = split_images(self.data, self.split, self.heldout)
        return ConvTask(images, labels, num_problems, self.channels, self.kernel, self.activation,
                        self.batch_size, self.init_scale, self.data.test_images, self.data.test_labels)
