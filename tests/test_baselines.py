"""Baselines by name, and the learning-rate tuning protocol (the contract every optimizer
passes is in test_optimizer_contract.py)."""

import math

import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.optim.baselines import make_baseline
from optimizer3.evaluation.tuning import LearningRateGrid, tune_learning_rate
from optimizer3.tasks.quadratic import QuadraticFamily

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


def test_tuning_grows_the_grid_downwards_when_every_rate_diverges():
    task = QuadraticFamily(dim=4).sample(32, torch.Generator().manual_seed(0))
    # SGD diverges on these quadratics at every rate from 10 to 1000.
    grid = LearningRateGrid(lr_min=10.0, lr_max=1000.0, per_decade=3, max_extensions=6)
    result = tune_learning_rate("sgd", task, 30, seed=0, grid=grid)
    assert result.best_lr < 1.0 and math.isfinite(min(result.scores))
    with pytest.raises(UsageError, match="Every learning rate diverged for sgd, down to"):
        tune_learning_rate("sgd", task, 30, seed=0, grid=LearningRateGrid(lr_min=10.0, lr_max=1000.0, per_decade=3,
                                                                          max_extensions=1))
