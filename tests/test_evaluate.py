import numpy as np
import pytest
import torch

from optimizer3.errors import UsageError
from optimizer3.evaluation.compare import compare
from optimizer3.evaluation.config import EvaluationConfig, LearningRateGrid
from optimizer3.evaluation.statistics import interval95, mean_curve, summarize
from optimizer3.learned.lstm import LSTMOptimizerConfig, init_meta_params
from optimizer3.tasks.mlp import MLPFamily
from optimizer3.tasks.images import ImageData
from optimizer3.tasks.quadratic import QuadraticFamily
from optimizer3.evaluation.runs import run_baseline, run_baselines, run_learned


def test_summary_statistics_and_intervals():
    rng = np.random.default_rng(0)
    values = rng.lognormal(size=500)
    summary = summarize(values, samples=1000, seed=0)
    assert np.isclose(summary["mean"], values.mean())
    assert np.isclose(summary["median"], np.median(values))
    assert np.isclose(summary["mean_log10"], np.log10(values).mean())
    assert np.isclose(summary["geometric_mean"], 10 ** np.log10(values).mean())
    for key in ("mean", "median", "mean_log10"):
        low, high = summary[f"{key}_ci"]
        assert low < summary[key] < high
    assert summary["diverged"] == 0


def test_diverged_runs_count_as_infinite():
    summary = summarize(np.array([1.0, np.nan, np.inf, 2.0]), samples=100, seed=0)
    assert summary["diverged"] == 2
    assert summary["mean"] == np.inf
    assert summary["median"] == np.inf  # two of four problems diverged


def test_intervals_reaching_diverged_runs_are_infinite_not_nan():
    # One run in 100 diverged: some resamples' means are infinite, so the upper bound is.
    summary = summarize(np.r_[np.ones(99), np.nan], samples=2000, seed=0)
    assert summary["mean_ci"] == [1.0, np.inf] and summary["mean_log10_ci"] == [0.0, np.inf]
    assert summarize(np.r_[np.ones(95), [np.nan] * 5], samples=2000, seed=0)["mean_ci"] == [np.inf, np.inf]
    curve = mean_curve(np.stack([np.ones(50), np.r_[np.ones(49), np.inf]]), samples=200, seed=0)
    assert curve["low"] == [1.0, 1.0] and curve["high"] == [1.0, np.inf]
    # A percentile that falls exactly on a finite order statistic is that statistic.
    assert interval95(np.r_[np.arange(40.0), np.inf]) == (1.0, 39.0)
    assert interval95(np.r_[np.arange(39.0), np.inf, np.inf]) == (1.0, np.inf)
    # Where nothing diverged, the interval is numpy's linear percentile, unchanged.
    values = np.random.default_rng(2).lognormal(size=77)
    assert list(interval95(values)) == list(np.percentile(values, [2.5, 97.5]))


def test_mean_curve_band_contains_the_mean():
    losses = np.random.default_rng(1).lognormal(size=(11, 300))
    curve = mean_curve(losses, samples=200, seed=0)
    assert len(curve["mean"]) == 11
    assert all(lo <= m <= hi for lo, m, hi in zip(curve["low"], curve["mean"], curve["high"]))


def test_every_optimizer_starts_from_the_same_problems():
    task = QuadraticFamily(dim=3).sample(8, torch.Generator().manual_seed(0))
    config = LSTMOptimizerConfig()
    learned = run_learned((init_meta_params(config, torch.Generator().manual_seed(0)), config), task, 5, seed=9).losses
    sgd = run_baseline("sgd", 0.01, task, 5, seed=9).losses
    assert learned.shape == sgd.shape == (6, 8)
    torch.testing.assert_close(learned[0], sgd[0])


def test_compare_tunes_on_validation_and_reports_every_optimizer():
    config = LSTMOptimizerConfig()
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    evaluation = EvaluationConfig(baselines=("sgd", "adam"), test_problems=20, tuning_problems=20, bootstrap=50,
                                  grid=LearningRateGrid(lr_min=1e-3, lr_max=1.0, per_decade=3))
    comparison = compare((meta, config), QuadraticFamily(dim=3), evaluation, (10,), tuning_seed=1)[10]
    assert set(comparison.summaries) == {"lstm", "sgd", "adam"}
    assert set(comparison.learning_rates) == {"sgd", "adam"}
    assert all(len(curve["mean"]) == 11 for curve in comparison.curves.values())
    ratios = comparison.ratios()
    best = min(comparison.summaries["sgd"]["mean"], comparison.summaries["adam"]["mean"])
    assert np.isclose(ratios["mean_vs_best_baseline"], comparison.summaries["lstm"]["mean"] / best)


def test_a_run_cut_short_equals_the_shorter_run():
    task = QuadraticFamily(dim=3).sample(4, torch.Generator().manual_seed(0))
    long = run_baseline("adam", 0.1, task, 12, seed=3, keep=(5,))
    short = run_baseline("adam", 0.1, task, 5, seed=3)
    assert torch.equal(long.first(5).losses, short.losses)
    assert torch.equal(long.first(5).params, short.params)
    assert long.first(12) is long
    with pytest.raises(ValueError, match="kept no parameters after step 7"):
        long.first(7)
    with pytest.raises(ValueError, match="must lie in"):
        run_baseline("adam", 0.1, task, 5, seed=3, keep=(9,))


@pytest.mark.parametrize("family", ["quadratic", "mlp"])
def test_baselines_in_lockstep_equal_separate_runs(family):
    if family == "quadratic":  # a task without copies_loss: one copy at a time
        task = QuadraticFamily(dim=3).sample(4, torch.Generator().manual_seed(0))
    else:  # an MLP: one product per layer for all copies
        g = torch.Generator().manual_seed(0)
        data = ImageData(torch.rand(200, 784, generator=g), torch.randint(0, 10, (200,), generator=g),
                     torch.rand(20, 784, generator=g), torch.randint(0, 10, (20,), generator=g), None)
        task = MLPFamily(data, hidden=(6,), batch_size=8, heldout=100).sample(3, torch.Generator())
    lrs = [0.001, 0.03, 0.3]
    for name in ("sgd", "adam"):
        for lr, run in zip(lrs, run_baselines(name, lrs, task, 6, seed=3)):
            alone = run_baseline(name, lr, task, 6, seed=3)
            # Equal up to rounding: a BLAS may round a wide product's columns differently from
            # narrow ones (at reproduce mnist's shapes here they are bit-identical:
            # one machine, 2026-11-28), and Adam's first steps magnify that in tiny gradients.
            torch.testing.assert_close(run.losses, alone.losses, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(run.params, alone.params, rtol=1e-4, atol=1e-4)
    with pytest.raises(UsageError, match="Invalid learning rate: 0"):
        run_baselines("adam", [0.1, 0], task, 6, seed=3)


def test_comparisons_at_several_horizons_equal_separate_comparisons():
    config = LSTMOptimizerConfig()
    meta = init_meta_params(config, torch.Generator().manual_seed(0))
    evaluation = EvaluationConfig(baselines=("sgd", "nag", "adam"), test_problems=12, tuning_problems=12, bootstrap=50,
                                  grid=LearningRateGrid(lr_min=1e-3, lr_max=1.0, per_decade=3))
    family = QuadraticFamily(dim=3)
    together = compare((meta, config), family, evaluation, (20, 2), tuning_seed=1)
    assert sorted(together) == [2, 20]
    assert together[2].prefix_of == 20 and together[20].prefix_of is None
    for steps in (2, 20):
        alone = compare((meta, config), family, evaluation, (steps,), tuning_seed=1)[steps]
        assert together[steps].learning_rates == alone.learning_rates
        assert together[steps].tuning == alone.tuning
        assert together[steps].summaries == alone.summaries
        assert together[steps].curves == alone.curves
    # SGD's tuned rate is the same at both horizons (one test run serves both), Adam's is not.
    assert together[2].learning_rates["sgd"] == together[20].learning_rates["sgd"]
    assert together[2].learning_rates["adam"] != together[20].learning_rates["adam"]
