import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from optimizer3.errors import UsageError
from optimizer3.tasks.mlp import MixedMLPTask, MLPFamily
from optimizer3.tasks.images import ImageData


def _fake_mnist(count=300, pixels=784, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ImageData(torch.rand(count, pixels, generator=g), torch.randint(0, 10, (count,), generator=g),
                 torch.rand(50, pixels, generator=g), torch.randint(0, 10, (50,), generator=g), None)


@pytest.mark.parametrize("hidden,activation,pixels", [
    ((20,), "sigmoid", 784), ((7, 5), "relu", 784), ((40,), "tanh", 784), ((9, 6), "sigmoid,relu", 784),
    ((8,), "tanh,relu,relu", 784), ((6, 5), "gelu", 64), ((), "sigmoid", 64), ((7,), "gelu,tanh", 64)])
def test_batched_instances_match_one_at_a_time_torch_modules(hidden, activation, pixels):
    family = MLPFamily(_fake_mnist(pixels=pixels), hidden=hidden, activation=activation, batch_size=16, heldout=100)
    task = family.sample(5, torch.Generator())
    g = torch.Generator().manual_seed(1)
    params = task.init(g).double().requires_grad_()
    batch = task.sample_batch(g)
    task64 = dataclasses.replace(task, images=task.images.double())
    losses = task64.loss(params, batch)
    names = activation.split(",")  # instance i uses the (i mod n)-th
    references = []
    for i in range(5):
        act = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh, "gelu": F.gelu}[names[i % len(names)]]
        offset, x = 0, task64.images[batch[i]]
        for layer, (fan_in, fan_out) in enumerate(task.shapes):
            w = params[i, offset : offset + fan_in * fan_out].view(fan_in, fan_out)
            offset += fan_in * fan_out
            b = params[i, offset : offset + fan_out]
            offset += fan_out
            x = x @ w + b
            if layer < len(task.shapes) - 1:
                x = act(x)
        references.append(F.cross_entropy(x, task.labels[batch[i]]))
        torch.testing.assert_close(losses[i], references[i])
    assert offset == task.dim
    # The gradients too: through the batched computation and through the one-at-a-time one.
    (batched,) = torch.autograd.grad(losses.sum(), params)
    (alone,) = torch.autograd.grad(torch.stack(references).sum(), params)
    torch.testing.assert_close(batched, alone)
    assert batched.abs().sum() > 0


def test_an_instance_of_a_mixed_family_is_that_instance_of_its_own_activations_family():
    data = _fake_mnist()
    mixed = MLPFamily(data, hidden=(6,), activation="sigmoid,relu", batch_size=8, heldout=100).sample(4, torch.Generator())
    relu = MLPFamily(data, hidden=(6,), activation="relu", batch_size=8, heldout=100).sample(4, torch.Generator())
    sigmoid = MLPFamily(data, hidden=(6,), batch_size=8, heldout=100).sample(4, torch.Generator())
    g = torch.Generator().manual_seed(5)
    params, batch = mixed.init(g).requires_grad_(), mixed.sample_batch(g)
    grads = [torch.autograd.grad(task.loss(params, batch).sum(), params)[0] for task in (mixed, sigmoid, relu)]
    accuracies = [task.test_accuracy(params) for task in (mixed, sigmoid, relu)]
    for i in range(4):  # even instances sigmoid, odd ones ReLU
        own = 1 + i % 2
        torch.testing.assert_close(grads[0][i], grads[own][i])
        assert accuracies[0][i] == accuracies[own][i]
    assert not torch.equal(grads[1][1], grads[2][1])  # the two activations do differ here


def test_an_instance_of_a_mixed_architecture_family_is_an_mlp_of_its_own_architecture_on_its_row():
    data = _fake_mnist()
    mixed = MLPFamily(data, hidden=(6,), mix_hidden=((5, 4), (9,)), batch_size=8, heldout=100).sample(
        7, torch.Generator())
    assert isinstance(mixed, MixedMLPTask) and mixed.dim == 784 * 9 + 9 + 9 * 10 + 10
    g = torch.Generator().manual_seed(5)
    params, batch = mixed.init(g), mixed.sample_batch(g)
    params.add_(0.01 * torch.randn(params.shape, generator=g))  # padding that the losses must not read
    params.requires_grad_()
    losses = mixed.loss(params, batch)
    (grads,) = torch.autograd.grad(losses.sum(), params)
    accuracy = mixed.test_accuracy(params.detach())
    for i in range(7):  # instance i has the (i mod 3)-th architecture
        hidden = ((6,), (5, 4), (9,))[i % 3]
        own = MLPFamily(data, hidden=hidden, batch_size=8, heldout=100).sample(1, torch.Generator())
        row = params[i : i + 1, : own.dim].detach().requires_grad_()
        loss = own.loss(row, batch[i : i + 1])
        torch.testing.assert_close(losses[i], loss[0])
        torch.testing.assert_close(grads[i, : own.dim], torch.autograd.grad(loss.sum(), row)[0][0])
        assert not grads[i, own.dim :].any()  # the padding's gradient is zero
        assert accuracy[i] == own.test_accuracy(row.detach())[0]
    together = mixed.copies_loss([params, 2 * params], batch)
    torch.testing.assert_close(together[0], losses)
    torch.testing.assert_close(together[1], mixed.loss(2 * params, batch))


def test_a_mixed_architecture_family_draws_each_architectures_init_and_zero_padding():
    data = _fake_mnist()
    mixed = MLPFamily(data, hidden=(6,), mix_hidden=((3, 3),), batch_size=8, heldout=100).sample(4, torch.Generator())
    params = mixed.init(torch.Generator().manual_seed(0))
    narrow = MLPFamily(data, hidden=(3, 3), batch_size=8, heldout=100).sample(2, torch.Generator())
    wide = MLPFamily(data, hidden=(6,), batch_size=8, heldout=100).sample(2, torch.Generator())
    g = torch.Generator().manual_seed(0)
    assert torch.equal(params[0::2], wide.init(g))  # the first architecture's draws come first
    assert torch.equal(params[1::2, : narrow.dim], narrow.init(g))
    assert not params[1::2, narrow.dim :].any()
    shard = mixed.rows(1, 4)  # instances 1, 2, 3: (3, 3), (6,), (3, 3)
    assert [(rows, task.hidden, task.num_problems) for rows, task in shard.parts()] == [
        (slice(1, None, 2), (6,), 1), (slice(0, None, 2), (3, 3), 2)]


def test_gradients_are_per_instance():
    family = MLPFamily(_fake_mnist(), batch_size=8, heldout=100)
    task = family.sample(2, torch.Generator())
    g = torch.Generator().manual_seed(2)
    params = task.init(g).double().requires_grad_()
    batch = task.sample_batch(g)
    task64 = dataclasses.replace(task, images=task.images.double())
    (grads,) = torch.autograd.grad(task64.loss(params, batch).sum(), params)
    one = dataclasses.replace(task, images=task.images.double(), num_problems=1)
    for i in range(2):
        single = params[i : i + 1].detach().clone().requires_grad_()
        (alone,) = torch.autograd.grad(one.loss(single, batch[i : i + 1]).sum(), single)
        torch.testing.assert_close(grads[i : i + 1], alone)
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("hidden,activation", [((20,), "sigmoid"), ((9, 6), "sigmoid,relu")])
def test_copies_share_minibatches_and_each_gets_its_own_losses_and_gradients(hidden, activation):
    task = MLPFamily(_fake_mnist(), hidden=hidden, activation=activation, batch_size=8,
                     heldout=100).sample(4, torch.Generator())
    g = torch.Generator().manual_seed(4)
    start, batch = task.init(g), task.sample_batch(g)
    copies = [(start + 0.1 * c * torch.randn(start.shape, generator=g)).requires_grad_() for c in range(3)]
    together = task.copies_loss(copies, batch)
    assert together.shape == (3, 4)
    grads = torch.autograd.grad(together.sum(), copies)
    for params, losses, grad in zip(copies, together, grads):
        alone = task.loss(params, batch)
        torch.testing.assert_close(losses, alone)
        torch.testing.assert_close(grad, torch.autograd.grad(alone.sum(), params)[0])
    assert not torch.allclose(together[0], together[1])  # the copies do differ


def test_instances_have_their_own_init_and_minibatches():
    task = MLPFamily(_fake_mnist(), batch_size=8, heldout=100).sample(2, torch.Generator())
    g = torch.Generator().manual_seed(3)
    params, batch = task.init(g), task.sample_batch(g)
    assert not torch.equal(params[0], params[1]) and not torch.equal(batch[0], batch[1])
    assert task.dim == 784 * 20 + 20 + 20 * 10 + 10 == params.shape[1]


def test_splits_are_disjoint_and_accuracy_is_a_fraction():
    data = _fake_mnist()
    train = MLPFamily(data, heldout=100, batch_size=8).sample(1, torch.Generator())
    held = MLPFamily(data, heldout=100, batch_size=8, split="heldout").sample(1, torch.Generator())
    assert len(train.labels) == 200 and len(held.labels) == 100
    assert torch.equal(train.images, data.train_images[:200])
    assert torch.equal(held.images, data.train_images[200:])
    accuracy = held.test_accuracy(held.init(torch.Generator().manual_seed(0)))
    assert accuracy.shape == (1,) and 0.0 <= float(accuracy) <= 1.0


@pytest.mark.parametrize(
    "kwargs,match",
    [({"hidden": (0,)}, "hidden layer sizes"), ({"hidden": (5, -1)}, "hidden layer sizes"),
     ({"activation": "swish"}, "'swish'"), ({"activation": "sigmoid,swish"}, "'sigmoid,swish'"),
     ({"activation": "sigmoid,"}, "'sigmoid,'"), ({"activation": ""}, "''"), ({"batch_size": 1000}, "batch size: 1000"),
     ({"batch_size": 0}, "batch size: 0"), ({"mix_hidden": ((20, 0),)}, "mix_hidden"),
     ({"mix_hidden": ((40,),), "activation": "sigmoid,relu"}, "cannot mix activations")],
)
def test_bad_settings(kwargs, match):
    with pytest.raises(UsageError, match=match):
        MLPFamily(_fake_mnist(), heldout=100, **kwargs)


def test_real_mnist_trains_with_adam(mnist_dir):
    from optimizer3.tasks.images import load_mnist
    from optimizer3.evaluation.runs import run_baseline

    family = MLPFamily(load_mnist(mnist_dir, download=False), split="heldout")
    losses = run_baseline("adam", 0.03, family.sample(4, torch.Generator()), 100, seed=0).losses
    assert float(losses[0].mean()) == pytest.approx(2.3, abs=0.15)  # chance level at the start
    assert float(losses[-1].mean()) < 0.8


def test_comparison_reports_test_accuracy_for_mlps():
    from optimizer3.evaluation.compare import compare
    from optimizer3.evaluation.config import EvaluationConfig, LearningRateGrid
    from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params

    config = LSTMOptimizerConfig(preprocessing="log_sign", output_init="zeros")
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    family = MLPFamily(_fake_mnist(), hidden=(5,), batch_size=8, heldout=100, split="heldout")
    evaluation = EvaluationConfig(baselines=("adam",), test_problems=3, tuning_problems=3, bootstrap=20,
                                  grid=LearningRateGrid(lr_min=1e-3, lr_max=1.0, per_decade=3))
    comparison = compare((meta, config), family, evaluation, (5,), tuning_seed=1)[5]
    for name in ("lstm", "adam"):
        low, high = comparison.summaries[name]["test_accuracy_ci"]
        assert 0.0 <= low <= comparison.summaries[name]["test_accuracy"] <= high <= 1.0
    from optimizer3.evaluation.report import markdown_table

    table = markdown_table(comparison).splitlines()
    assert table[0].endswith("test accuracy |") and all(line.count("|") == 8 for line in table)


@pytest.mark.parametrize("hidden", [(8, 6), ()])
def test_benchmark_members(hidden):
    task = MLPFamily(_fake_mnist(pixels=64), hidden=hidden, batch_size=8, heldout=100).sample(3, torch.Generator())
    sizes = (64, *hidden, 10)
    assert task.parameter_shapes == tuple(
        shape for fan_in, fan_out in zip(sizes[:-1], sizes[1:]) for shape in ((fan_in, fan_out), (fan_out,)))
    assert sum(math.prod(shape) for shape in task.parameter_shapes) == task.dim
    assert task.chance_loss == pytest.approx(math.log(10)) and task.test_metric_name == "test accuracy"
    params = task.init(torch.Generator().manual_seed(0))
    accuracy = task.test_metric(params)
    assert accuracy.shape == (3,) and bool(((accuracy >= 0) & (accuracy <= 1)).all())
    assert torch.equal(accuracy, task.test_accuracy(params))
    loss = task.loss(params, task.sample_batch(torch.Generator().manual_seed(1)))
    assert bool((loss - task.chance_loss).abs().lt(0.7).all())  # near chance at the start
    mixed = MLPFamily(_fake_mnist(pixels=64), hidden=hidden, mix_hidden=((5,),), batch_size=8,
                      heldout=100).sample(3, torch.Generator())
    params = mixed.init(torch.Generator().manual_seed(0))
    assert torch.equal(mixed.test_metric(params), mixed.test_accuracy(params)) and mixed.chance_loss == task.chance_loss


def test_logistic_regression_on_small_images_learns_with_adam():
    from optimizer3.evaluation.runs import run_baselines

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (400,), generator=g)
    images = (0.5 * torch.randn(10, 64, generator=g)[labels] + 0.3 * torch.rand(400, 64, generator=g)).clamp(0, 1)
    data = ImageData(images, labels, images[:50], labels[:50], None)
    task = MLPFamily(data, hidden=(), batch_size=32, heldout=100, split="heldout").sample(2, torch.Generator())
    assert task.dim == 64 * 10 + 10
    runs = run_baselines("adam", [0.01, 0.03], task, 30, seed=0)
    for run in runs:
        assert float(run.losses[-1].mean()) < 0.5 * float(run.losses[0].mean())
