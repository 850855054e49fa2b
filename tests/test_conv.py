import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_rows_and_copies_match
from optimizer3.errors import UsageError
from optimizer3.tasks import conv
from optimizer3.tasks.conv import ConvFamily
from optimizer3.tasks.images import ImageData


def _images(count=300, side=8, seed=0, learnable=False):
    """Random grey images and labels; `learnable`: each class a noisy template of its own."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count + 60,), generator=g)
    images = torch.rand(count + 60, side * side, generator=g)
    if learnable:
        images = (torch.rand(10, side * side, generator=g)[labels] + 0.3 * images).clamp(0, 1)
    return ImageData(images[:count], labels[:count], images[count:], labels[count:], None)


def _reference_logits(task, row, images):
    """One instance's class scores by torch's own layers, its weights read from its `row`."""
    sizes = [math.prod(shape) for shape in task.parameter_shapes]
    pieces = [piece.view(shape) for piece, shape in zip(row.split(sizes), task.parameter_shapes)]
    x, inputs = images.view(-1, 1, task.side, task.side), 1
    for layer, outputs in enumerate(task.channels):
        weight = pieces[2 * layer].view(outputs, inputs, task.kernel, task.kernel)
        x = {"relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu}[task.activation](
            F.conv2d(x, weight, pieces[2 * layer + 1], stride=2, padding=1))
        inputs = outputs
    return x.mean(dim=(2, 3)) @ pieces[-2] + pieces[-1]


@pytest.mark.parametrize("side,channels,kernel,activation", [(8, (8, 16), 3, "relu"), (28, (4, 6, 5), 3, "tanh"),
                                                             (8, (5,), 5, "gelu")])
def test_batched_instances_match_torch_layers_one_instance_at_a_time(side, channels, kernel, activation):
    family = ConvFamily(_images(side=side), channels=channels, kernel=kernel, activation=activation, batch_size=6,
                        heldout=100)
    task = family.sample(4, torch.Generator())
    g = torch.Generator().manual_seed(1)
    params, batch = task.init(g).double().add(0.1).requires_grad_(), task.sample_batch(g)  # nonzero biases
    task64 = dataclasses.replace(task, images=task.images.double())
    losses = task64.loss(params, batch)
    references = torch.stack([F.cross_entropy(_reference_logits(task64, params[i], task64.images[batch[i]]),
                                              task.labels[batch[i]]) for i in range(4)])
    torch.testing.assert_close(losses, references)
    (batched,) = torch.autograd.grad(losses.sum(), params)
    (alone,) = torch.autograd.grad(references.sum(), params)
    torch.testing.assert_close(batched, alone)
    assert not torch.allclose(batched[0], batched[1])  # each instance its own gradient


def test_rows_and_copies_give_each_instances_own_loss():
    task = ConvFamily(_images(), batch_size=8, heldout=100).sample(5, torch.Generator())
    assert_rows_and_copies_match(task)


def test_shapes_init_splits_and_test_accuracy(monkeypatch):
    data = _images()
    task = ConvFamily(data, channels=(3, 7), batch_size=8, heldout=100).sample(3, torch.Generator())
    assert task.parameter_shapes == ((3, 9), (3,), (7, 27), (7,), (7, 10), (10,))
    assert sum(math.prod(shape) for shape in task.parameter_shapes) == task.dim
    assert task.chance_loss == pytest.approx(math.log(10)) and task.test_metric_name == "test accuracy"
    params = task.init(torch.Generator().manual_seed(0))
    assert not params[:, 27:30].any() and abs(float(params[:, :27].std()) - 1 / 3) < 0.1  # LeCun weights
    assert torch.equal(task.images, data.train_images[:200])
    held = ConvFamily(data, batch_size=8, heldout=100, split="heldout").sample(1, torch.Generator())
    assert torch.equal(held.images, data.train_images[200:]) and torch.equal(held.labels, data.train_labels[200:])
    accuracy = task.test_metric(params)
    assert accuracy.shape == (3,) and bool(((accuracy >= 0) & (accuracy <= 1)).all())
    monkeypatch.setattr(conv, "TEST_CHUNK_NUMBERS", 3 * 3 * 16 * 7)  # chunks of 7 of the 60 test images
    assert torch.equal(task.test_metric(params), accuracy)
    one = task.rows(1, 2).test_metric(params[1:2])
    assert one == accuracy[1]


def test_adam_lowers_the_loss_from_chance():
    from optimizer3.evaluation.runs import run_baselines

    family = ConvFamily(_images(learnable=True), batch_size=32, heldout=100, split="heldout")
    runs = run_baselines("adam", [0.01, 0.03], family.sample(3, torch.Generator()), 40, seed=0)
    for run in runs:
        assert bool(torch.isfinite(run.losses).all())
        assert float(run.losses[0].mean()) == pytest.approx(math.log(10), abs=0.3)
        assert float(run.losses[-5:].mean()) < 0.7 * math.log(10)


def test_real_mnist(mnist_dir):
    from optimizer3.tasks.images import load_mnist

    task = ConvFamily(load_mnist(mnist_dir, download=False), batch_size=32, split="heldout").sample(
        2, torch.Generator())
    params = task.init(torch.Generator().manual_seed(0)).requires_grad_()
    optimizer = torch.optim.Adam([params], lr=0.03)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(60):  # a network that pools globally learns slowly: 1.1 after 200 steps
        loss = task.loss(params, task.sample_batch(g))
        losses.append(float(loss.detach().mean()))
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
    assert losses[0] == pytest.approx(math.log(10), abs=0.2) and sum(losses[-10:]) / 10 < losses[0] - 0.15
    accuracy = task.test_metric(params.detach())
    assert accuracy.shape == (2,) and bool((accuracy > 0.2).all()) and bool((accuracy <= 1).all())


@pytest.mark.parametrize(
    "kwargs,match",
    [({"channels": ()}, "channels"), ({"channels": (8, 0)}, "channels"), ({"kernel": 0}, "kernel size 0"),
     ({"kernel": 7, "channels": (4, 4, 4)}, "kernel size 7"), ({"activation": "swish"}, "'swish'"),
     ({"activation": "relu,tanh"}, "'relu,tanh'"), ({"batch_size": 1000}, "batch size: 1000"),
     ({"split": "test"}, "split: 'test'"), ({"heldout": 300}, "held-out size: 300"),
     ({"init_scale": 0.0}, "init_scale")],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(UsageError, match=match):
        ConvFamily(_images(), **{"heldout": 100, **kwargs})


def test_non_square_images_and_no_problems_are_refused():
    with pytest.raises(UsageError, match="60 pixels are not square"):
        ConvFamily(ImageData(torch.rand(300, 60), torch.zeros(300, dtype=torch.long), torch.rand(5, 60),
                             torch.zeros(5, dtype=torch.long), None), heldout=100)
    with pytest.raises(UsageError, match="number of problems: 0"):
        ConvFamily(_images(), heldout=100).sample(0, torch.Generator())
