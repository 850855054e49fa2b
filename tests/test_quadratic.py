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


def test_benchmark_members():
    task = QuadraticFamily(dim=4).sample(3, torch.Generator().manual_seed(0))
    assert task.parameter_shapes == ((4,),) and task.chance_loss is None and task.test_metric_name is None
    copies = [torch.randn(3, 4, generator=torch.Generator().manual_seed(c)) for c in range(2)]
    together = task.copies_loss(copies, None)
    assert together.shape == (2, 3)
    for copy, losses in zip(copies, together):
        assert torch.equal(losses, task.loss(copy))


def test_options_left_at_their_defaults_draw_the_plain_family():
    plain = QuadraticFamily(dim=5).sample(7, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the family's draws, spelled out
    weights, targets = torch.randn(7, 5, 5, generator=g), torch.randn(7, 5, generator=g)
    assert torch.equal(plain.weights, weights) and torch.equal(plain.targets, targets)
    same = QuadraticFamily(dim=5, scale_decades=(0.0, 0.0), condition_decades=0.0).sample(
        7, torch.Generator().manual_seed(4))
    assert torch.equal(same.weights, weights) and torch.equal(same.targets, targets)


def test_scale_decades_multiply_each_problems_weights_by_a_power_of_ten_in_range():
    plain = QuadraticFamily(dim=6).sample(200, torch.Generator().manual_seed(5), dtype=torch.float64)
    scaled = QuadraticFamily(dim=6, scale_decades=(-2.0, 3.0)).sample(200, torch.Generator().manual_seed(5),
                                                                    dtype=torch.float64)
    assert torch.equal(scaled.targets, plain.targets)  # the targets are the plain family's
    ratio = scaled.weights / plain.weights
    torch.testing.assert_close(ratio, ratio[:, :1, :1].expand_as(ratio))  # one factor per problem
    exponents = ratio[:, 0, 0].log10()
    assert float(exponents.min()) >= -2.0 and float(exponents.max()) <= 3.0
    assert float(exponents.min()) < -1.8 and float(exponents.max()) > 2.8  # the whole range is used


def test_condition_decades_scale_the_columns_and_raise_the_condition_number():
    plain = QuadraticFamily(dim=10).sample(300, torch.Generator().manual_seed(6), dtype=torch.float64)
    family = QuadraticFamily(dim=10, condition_decades=4.0, scale_decades=(1.0, 1.0))
    task = family.sample(300, torch.Generator().manual_seed(6), dtype=torch.float64)
    columns = 10.0 ** (1.0 - 4.0 * torch.arange(10, dtype=torch.float64) / 9)
    torch.testing.assert_close(task.weights, plain.weights * columns)
    before, after = torch.linalg.cond(plain.weights).log10(), torch.linalg.cond(task.weights).log10()
    # cond(W)·cond(D) ≥ cond(WD) ≥ cond(D) / cond(W), with cond(D) = 10**4.
    assert bool((after <= 4.0 + before + 1e-6).all()) and bool((after >= 4.0 - before - 1e-6).all())
    assert 3.0 < float((after - before).median()) < 4.0  # measured 3.2: most of the 4 decades


@pytest.mark.parametrize(
    "kwargs,match",
    [({"scale_decades": (1.0, 0.0)}, r"scale_decades: \(1.0, 0.0\)"),
     ({"scale_decades": (float("nan"), 0.0)}, "scale_decades"), ({"scale_decades": (0.0,)}, "scale_decades"),
     ({"condition_decades": -1.0}, "condition_decades: -1.0"), ({"condition_decades": float("inf")}, "inf"),
     ({"condition_decades": 2.0, "dim": 1}, "dim=1")],
)
def test_bad_options(kwargs, match):
    with pytest.raises(UsageError, match=match):
        QuadraticFamily(**kwargs)
