"""Statistics of final losses over test problems: means, medians and geometric means, each with a
95% percentile-bootstrap interval, and mean curves with bands. A diverged problem (a NaN or
infinite loss) counts as +inf, so that it is never averaged away.

Computation only: arrays in, numbers out.
"""

from __future__ import annotations

import numpy as np


def finite_or_inf(losses: np.ndarray) -> np.ndarray:
    """Losses as float64 with every diverged (NaN or infinite) value set to +inf."""
    losses = np.asarray(losses, dtype=np.float64)
    return np.where(np.isfinite(losses), losses, np.inf)


def safe_log10(losses: np.ndarray) -> np.ndarray:
    """log10 of losses, with exact zeros clamped to the smallest positive float64."""
    return np.log10(np.maximum(finite_or_inf(losses), np.finfo(np.float64).tiny))


def _statistics(values: np.ndarray, axis: int) -> dict[str, np.ndarray]:
    with np.errstate(invalid="ignore"):
        return {
            "mean": values.mean(axis=axis),
            "median": np.median(values, axis=axis),
            "mean_log10": safe_log10(values).mean(axis=axis),
        }


def interval95(samples: np.ndarray, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The 2.5th and 97.5th percentiles of bootstrap `samples` (finite or +inf) along `axis`.

    numpy interpolates between neighbouring order statistics and gives NaN where one of them is
    infinite; the interval's bound is then infinite too, unless it falls exactly on the finite
    neighbour.
    """
    samples = np.asarray(samples, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        linear = np.percentile(samples, [2.5, 97.5], axis=axis)
    if not np.isnan(linear).any():  # nothing diverged near the bounds
        return linear[0], linear[1]
    lower = np.percentile(samples, [2.5, 97.5], axis=axis, method="lower")
    count = samples.size if axis is None else samples.shape[axis]
    exact = np.array([(q / 100 * (count - 1)) % 1 == 0 for q in (2.5, 97.5)])
    exact = exact.reshape((2,) + (1,) * (linear.ndim - 1))
    bounds = np.where(np.isnan(linear), np.where(exact, lower, np.inf), linear)
    return bounds[0], bounds[1]


def summarize(final_losses: np.ndarray, samples: int, seed: int) -> dict[str, float]:
    """Mean, median and mean log10 of final losses, each with a 95% bootstrap interval.

    Every statistic is computed on the same `samples` resamples (percentile bootstrap).
    """
    values = finite_or_inf(final_losses)
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, len(values), size=(samples, len(values)))]
    point, boot = _statistics(values, axis=0), _statistics(resampled, axis=1)
    summary: dict[str, float] = {}
    for name in point:
        summary[name] = float(point[name])
        low, high = interval95(boot[name])
        summary[f"{name}_ci"] = [float(low), float(high)]
    summary["geometric_mean"] = float(10.0 ** point["mean_log10"])
    summary["diverged"] = int((~np.isfinite(values)).sum())
    return summary


def bootstrap_mean_interval(values: np.ndarray, samples: int, seed: int) -> list[float]:
    """95% percentile bootstrap interval of the mean of `values`."""
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(samples, len(values)))].mean(axis=1)
    return [float(v) for v in interval95(means)]


def mean_curve(losses: np.ndarray, samples: int, seed: int, chunk: int = 100) -> dict[str, list[float]]:
    """Mean loss at every step with a 95% bootstrap band, for plotting.

    Args:
      losses: shape [steps + 1, problems].
    """
    values = finite_or_inf(losses)
    rng = np.random.default_rng(seed)
    problems = values.shape[1]
    means = []
    for begin in range(0, samples, chunk):  # chunks bound the memory of the resamples
        index = rng.integers(0, problems, size=(min(chunk, samples - begin), problems))
        means.append(values[:, index].mean(axis=2))
    boot = np.concatenate(means, axis=1)
    low, high = interval95(boot, axis=1)
    return {"mean": values.mean(axis=1).tolist(), "low": low.tolist(), "high": high.tolist()}
