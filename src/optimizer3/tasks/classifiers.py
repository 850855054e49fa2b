"""What the image classifiers (MLPs, convolutional networks) share: activations and splits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.images import ImageData

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu}
CLASSES = 10
SPLITS = ("train", "heldout")


def activation_names(spec: str) -> tuple[str, ...]:
    """The activations that `spec` names: one name, or several joined by commas, in which case
    instance i of a task uses the (i mod n)-th (a family that mixes activations; repeating a
    name weights it)."""
    names = tuple(spec.split(","))
    if not all(name in ACTIVATIONS for name in names):
        raise UsageError(
            f"Unknown activation: {spec!r}; use {', '.join(ACTIVATIONS)}, or several of them joined by "
            "commas without spaces (sigmoid,relu) for instances that alternate between them"
        )
    return names


def check_split(data: ImageData, split: str, heldout: int, batch_size: int) -> None:
    """Refuse a split, held-out size or batch size that `split_images` cannot serve."""
    if split not in SPLITS:
        raise UsageError(f"Unknown split: {split!r}; choose train or heldout")
    if not 0 < heldout < len(data.train_labels):
        raise UsageError(f"Invalid held-out size: {heldout}; use 1 to {len(data.train_labels) - 1}")
    available = len(split_images(data, split, heldout)[1])
    if not 0 < batch_size <= available:
        raise UsageError(f"Invalid batch size: {batch_size}; use 1 to {available}, the images in the {split} split")


def split_images(data: ImageData, split: str, heldout: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and labels of a split: "heldout" is the last `heldout` training images (the
    benchmark's and evaluation's runs), "train" the rest (meta-training)."""
    cut = len(data.train_labels) - heldout
    if split == "train":
        return data.train_images[:cut], data.train_labels[:cut]
    return data.train_images[cut:], data.train_labels[cut:]
