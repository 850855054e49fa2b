"""PES (meta/pes.py): the estimate against finite differences, persistence, dropped pairs, and
the batched evaluation against `LearnedOptimizer` as a user applies it."""

import dataclasses

import pytest
import torch

from optimizer3.evaluation.runs import run_learned
from optimizer3.learned.mlp import FEATURES, MLPOptimizerConfig, init_meta_params
from optimizer3.meta import pes
from optimizer3.tasks.augment import augment
from optimizer3.tasks.images import ImageData
from optimizer3.tasks.mlp import MLPFamily
from optimizer3.tasks.quadratic import QuadraticFamily

CONFIG = MLPOptimizerConfig(initial_lr=0.05)


@pytest.fixture
def mnist_data():
    """Random 4x4 "images" of ten classes: an MLP task that needs no files."""
    g = torch.Generator().manual_seed(0)
    return ImageData(torch.rand(400, 16, generator=g), torch.randint(0, 10, (400,), generator=g),
                     torch.rand(50, 16, generator=g), torch.randint(0, 10, (50,), generator=g), None)


def _meta(seed=0):
    generator = torch.Generator().manual_seed(seed)
    meta = init_meta_params(CONFIG, generator)
    meta["weight2"] = torch.randn(meta["weight2"].shape, generator=generator) * 0.3
    meta["skip"] = meta["skip"] + torch.randn(len(FEATURES), generator=generator) * 0.1
    return {name: tensor.double() for name, tensor in meta.items()}


def _chain_loss(theta, like, task, steps):
    """The meta-loss that one truncation from the start measures, for one set of meta-parameters
    applied to every problem (mean over problems)."""
    chain = pes.start_chain(task, CONFIG, torch.Generator().manual_seed(0), theta.numel())
    chain = chain._replace(params=chain.params[:1], states=tuple(
        s._replace(momentum=s.momentum[:, : task.num_problems], second=s.second[: task.num_problems],
                   row=s.row[: task.num_problems], col=s.col[: task.num_problems]) for s in chain.states))
    log_losses, _ = pes.run_steps(pes.unflatten(theta, like), task, chain, steps, torch.Generator().manual_seed(1),
                                  CONFIG, 1e-4)
    return float(log_losses.mean())


def test_flatten_and_unflatten_round_trip():
    meta = _meta()
    theta = pes.flatten(meta)
    assert theta.numel() == sum(t.numel() for t in meta.values())
    back = pes.unflatten(theta, meta)
    assert all(torch.equal(back[name], meta[name]) for name in meta)
    batched = pes.unflatten(torch.stack([theta, 2 * theta]), meta)
    assert all(torch.equal(batched[name][1], 2 * meta[name]) for name in meta)


def test_the_estimate_points_along_the_finite_difference_gradient():
    like = _meta()
    theta = pes.flatten(like)
    task = QuadraticFamily(dim=4).sample(1, torch.Generator().manual_seed(5))
    task = dataclasses.replace(task, weights=task.weights.double(), targets=task.targets.double())
    steps, sigma, pairs = 5, 1e-3, 3000
    # The same problem for every pair: the estimate's mean is the gradient of this problem's loss.
    many = dataclasses.replace(task, weights=task.weights.expand(pairs, -1, -1), targets=task.targets.expand(pairs, -1))
    chain = pes.start_chain(many, CONFIG, torch.Generator().manual_seed(0), theta.numel())
    perturbations = torch.randn(pairs, theta.numel(), generator=torch.Generator().manual_seed(2), dtype=torch.float64) * sigma
    estimate, _ = pes.pes_estimate(theta, perturbations, like, many, chain, steps, torch.Generator().manual_seed(1),
                                   CONFIG, sigma, 1e-4)
    assert estimate.count == pairs
    gradient = estimate.total / estimate.count
    exact = torch.zeros_like(theta)
    for index in range(theta.numel()):
        step = torch.zeros_like(theta)
        step[index] = 1e-5
        exact[index] = (_chain_loss(theta + step, like, task, steps) - _chain_loss(theta - step, like, task, steps)) / 2e-5
    cosine = torch.nn.functional.cosine_similarity(gradient, exact, dim=0)
    assert cosine > 0.95, float(cosine)


def test_perturbations_accumulate_over_a_chain_and_restart_with_it():
    like = _meta()
    theta = pes.flatten(like)
    task = QuadraticFamily(dim=3).sample(4, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    chain = pes.start_chain(task, CONFIG, generator, theta.numel())
    first = torch.randn(4, theta.numel(), dtype=torch.float64, generator=generator) * 0.01
    second = torch.randn(4, theta.numel(), dtype=torch.float64, generator=generator) * 0.01
    _, chain = pes.pes_estimate(theta, first, like, task, chain, 3, generator, CONFIG, 0.01, 1e-4)
    before, draws = chain, generator.get_state()
    estimate, chain = pes.pes_estimate(theta, second, like, task, chain, 3, generator, CONFIG, 0.01, 1e-4)
    torch.testing.assert_close(chain.accumulated, first + second)
    assert chain.steps == 6
    assert not torch.equal(chain.params[0], chain.params[1])  # the two copies of a pair went apart
    # The second truncation's estimate weighs its loss difference by both truncations' perturbations.
    replay = torch.Generator()
    replay.set_state(draws)
    both = pes.unflatten(torch.cat([theta + second, theta - second]).to(before.params.dtype), like)
    log_losses, _ = pes.run_steps(both, task, before, 3, replay, CONFIG, 1e-4)
    expected = ((first + second) * (log_losses[0] - log_losses[1]).unsqueeze(1)).sum(dim=0) / (2 * 0.01**2)
    torch.testing.assert_close(estimate.total, expected)
    assert pes.start_chain(task, CONFIG, generator, theta.numel()).accumulated.abs().sum() == 0


def test_a_pair_that_turns_non_finite_drops_out_of_its_chain():
    like = _meta()
    theta = pes.flatten(like)
    task = QuadraticFamily(dim=3).sample(3, torch.Generator().manual_seed(0))
    task = dataclasses.replace(task, weights=task.weights.double(), targets=task.targets.double())
    task.weights[1] = float("nan")
    generator = torch.Generator().manual_seed(1)
    chain = pes.start_chain(task, CONFIG, generator, theta.numel())
    perturbations = torch.randn(3, theta.numel(), dtype=torch.float64, generator=generator) * 0.01
    estimate, chain = pes.pes_estimate(theta, perturbations, like, task, chain, 2, generator, CONFIG, 0.01, 1e-4)
    assert estimate.count == 2 and chain.alive.tolist() == [True, False, True]
    assert torch.isfinite(estimate.total).all() and estimate.meta_loss == estimate.meta_loss
    estimate, chain = pes.pes_estimate(theta, perturbations, like, task, chain, 2, generator, CONFIG, 0.01, 1e-4)
    assert estimate.count == 2 and chain.alive.tolist() == [True, False, True]  # dropped for good


def test_a_pair_whose_parameters_overflow_drops_out():
    # A step size of 1e39 is infinite in float32: one step takes every copy's parameters to
    # infinity, while the losses measured in that step (before it) are still finite.
    config = MLPOptimizerConfig(initial_lr=1e39)
    like = init_meta_params(config, torch.Generator().manual_seed(0))
    theta = pes.flatten(like)
    task = QuadraticFamily(dim=3).sample(2, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    chain = pes.start_chain(task, config, generator, theta.numel())
    estimate, chain = pes.pes_estimate(theta, torch.zeros(2, theta.numel()), like, task, chain, 1, generator, config,
                                       0.01, 1e-4)
    assert estimate.count == 0 and not chain.alive.any()


def test_batched_evaluation_equals_learned_optimizer_per_problem(mnist_data):
    meta = {name: tensor.float() for name, tensor in _meta().items()}
    generator = torch.Generator().manual_seed(0)
    task = MLPFamily(mnist_data, hidden=(6,), activation="relu", batch_size=16, heldout=100).sample(3, generator)
    ours = pes.evaluate(meta, task, 12, 5, CONFIG)
    theirs = run_learned((meta, CONFIG), task, 12, 5).losses[-1]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_augmented_losses_are_the_original_ones_at_the_reparameterized_point(mnist_data):
    generator = torch.Generator().manual_seed(0)
    task = MLPFamily(mnist_data, hidden=(5,), activation="relu", batch_size=8, heldout=100).sample(2, generator)
    augmented = augment(task, generator, parameter_decades=1.0, loss_decades=2.0)
    q = augmented.init(torch.Generator().manual_seed(3))
    theta = task.init(torch.Generator().manual_seed(3))
    torch.testing.assert_close(q * augmented.scales, theta)
    batch = task.sample_batch(generator)
    losses = augmented.loss(q, batch)
    torch.testing.assert_close(augmented.original_loss(losses), task.loss(theta, batch))
    scales = augmented.scales[0].unique()
    assert 1 < len(scales) <= len(task.parameter_shapes)  # one factor per tensor
    assert not torch.allclose(augmented.loss_scales, torch.ones(2))
    # The gradient an optimizer of q sees is c s times the gradient of the original loss.
    q = q.requires_grad_()
    (grad_q,) = torch.autograd.grad(augmented.loss(q, batch).sum(), q)
    theta = theta.requires_grad_()
    (grad_theta,) = torch.autograd.grad(task.loss(theta, batch).sum(), theta)
    torch.testing.assert_close(grad_q, augmented.scales * augmented.loss_scales.unsqueeze(1) * grad_theta)
