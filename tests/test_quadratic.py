import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.tasks import TaskConfig, make_task_family
from optimizer3.tasks.quadratic import QuadraticFamily


def test_loss_matches_the_formula_problem_by_problem():
    task = QuadraticFamily(dim=4).sample(6, torch.Generator().manual_seed(0), dtype=torch.float64)
    params = torch.randn(6, 4, dtype=torch.float64)
    losses = task.loss(params)
    for i in range(6):
        residual = task.weights[i] @ params[i] - task.targets[i]
        torch.testing.assert_close(losses[i], (residual**2).sum())


def test_gradient_matches_the_analytic_one():
    task = QuadraticFamily(dim=5).sample(3, torch.Generator().manual_seed(1), dtype=torch.float64)
    params = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    (grads,) = torch.autograd.grad(task.loss(params).sum(), params)
    W, y = task.weights, task.targets
    analytic = 2 * torch.einsum("nji,nj->ni", W, torch.einsum("nij,nj->ni", W, params.detach()) - y)
    torch.testing.assert_close(grads, analytic)


def test_start_is_zero_and_initial_loss_is_target_norm():
    task = QuadraticFamily(dim=10).sample(4, torch.Generator().manual_seed(2))
    params = task.init(torch.Generator())
    assert torch.equal(params, torch.zeros(4, 10))
    torch.testing.assert_close(task.loss(params), (task.targets**2).sum(1))


def test_sampling_is_deterministic_and_standard_normal():
    a = QuadraticFamily().sample(2000, torch.Generator().manual_seed(3))
    b = QuadraticFamily().sample(2000, torch.Generator().manual_seed(3))
    assert torch.equal(a.weights, b.weights) and torch.equal(a.targets, b.targets)
    assert abs(float(a.weights.mean())) < 0.01 and abs(float(a.weights.std()) - 1) < 0.01


def test_registry_and_bad_names():
    assert isinstance(make_task_family(TaskConfig("quadratic", 3)), QuadraticFamily)
    with pytest.raises(UsageError, match="Unknown task: 'cubic'"):
        TaskConfig(name="cubic")
    with pytest.raises(UsageError, match="dim: 0"):
        TaskConfig(dim=0)
