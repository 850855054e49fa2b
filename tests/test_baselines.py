"""One contract that every baseline passes, on a parabola and on a Rosenbrock valley."""

import io
import math

import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.optim.baselines import BASELINES, make_baseline
from optimizer3.optim.tuning import LearningRateGrid, tune_learning_rate
from optimizer3.tasks.quadratic import QuadraticFamily

LEARNING_RATES = {"sgd": 0.1, "nag": 0.02, "rmsprop": 0.03, "adam": 0.05}


def _parabola(x):
    return (x**2).sum()


def _rosenbrock(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_is_a_real_torch_optimizer_that_descends_a_parabola(name):
    x = torch.tensor([3.0, -2.0], requires_grad=True)
    optimizer = make_baseline(name, [x], LEARNING_RATES[name])
    assert isinstance(optimizer, torch.optim.Optimizer)
    start = float(_parabola(x.detach()))
    for _ in range(200):
        optimizer.zero_grad()
        _parabola(x).backward()
        optimizer.step()
    assert float(_parabola(x.detach())) < 1e-2 * start


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_makes_progress_on_rosenbrock(name):
    x = torch.tensor([-1.0, 1.5], requires_grad=True)
    lr = {"sgd": 1e-4, "nag": 1e-4}.get(name, 1e-2)
    optimizer = make_baseline(name, [x], lr)
    start = float(_rosenbrock(x.detach()))
    for _ in range(500):
        optimizer.zero_grad()
        _rosenbrock(x).backward()
        optimizer.step()
    assert float(_rosenbrock(x.detach())) < 0.5 * start


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_state_dict_round_trip(name):
    x = torch.randn(3, requires_grad=True)
    optimizer = make_baseline(name, [x], 0.01)
    _parabola(x).backward()
    optimizer.step()
    y = x.detach().clone().requires_grad_()
    clone = make_baseline(name, [y], 0.5)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    assert clone.param_groups[0]["lr"] == 0.01
    # The optimizer's own state (momentum, averages, step count) came along: both continue alike.
    for _ in range(3):
        for params, opt in (([x], optimizer), ([y], clone)):
            opt.zero_grad()
            _parabola(params[0]).backward()
            opt.step()
    assert torch.equal(x, y)


def test_unknown_name_and_bad_learning_rate_are_refused():
    with pytest.raises(UsageError, match="Unknown baseline optimizer: 'adagrad'.*sgd, nag, rmsprop, adam"):
        make_baseline("adagrad", [torch.zeros(1, requires_grad=True)], 0.1)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        make_baseline("adam", [torch.zeros(1, requires_grad=True)], -1)


def test_grid_points_per_decade_and_validation():
    exponents = LearningRateGrid(lr_min=1e-3, lr_max=1e-1, per_decade=4).exponents()
    assert len(exponents) == 9
    assert math.isclose(exponents[0], -3) and math.isclose(exponents[-1], -1)
    with pytest.raises(UsageError):
        LearningRateGrid(per_decade=2)
    with pytest.raises(UsageError):
        LearningRateGrid(lr_min=1.0, lr_max=0.1)


def test_tuning_picks_an_interior_point_and_grows_the_grid_past_an_edge():
    task = QuadraticFamily(dim=4).sample(64, torch.Generator().manual_seed(0))
    # A grid far below the good rates: the best is at the top edge until the grid grows.
    grid = LearningRateGrid(lr_min=1e-6, lr_max=1e-5, per_decade=3, max_extensions=8)
    result = tune_learning_rate("adam", task, 30, seed=0, grid=grid)
    assert result.best_lr > 1e-4
    index = result.lrs.index(min(result.lrs, key=lambda lr: abs(lr - result.best_lr)))
    assert 0 < index < len(result.lrs) - 1
    best_score = min(result.scores)
    assert result.scores[index] == best_score


def test_tuning_gives_up_clearly_when_the_grid_cannot_grow_enough():
    task = QuadraticFamily(dim=4).sample(16, torch.Generator().manual_seed(0))
    grid = LearningRateGrid(lr_min=1e-8, lr_max=1e-7, per_decade=3, max_extensions=1)
    with pytest.raises(UsageError, match="for adam is still on the grid's edge"):
        tune_learning_rate("adam", task, 10, seed=0, grid=grid)
