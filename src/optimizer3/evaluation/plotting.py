"""Figures from computed curves. Plotting only plots: every number arrives computed."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402

LEARNED_NAME = "lstm"


def plot_loss_curves(
    curves: dict[str, dict[str, list[float]]], path: pathlib.Path, title: str
) -> None:
    """Mean loss against step on a log axis, one line per optimizer with its 95% band.

    Args:
      curves: optimizer name -> {"mean", "low", "high"}, each a list over steps 0..T.
      path: where to write the PNG.
      title: the figure's title.
    """
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    _draw_curves(axes, curves, title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_panels(panels: dict[str, dict[str, dict[str, list[float]]]], path: pathlib.Path) -> None:
    """One `plot_loss_curves` panel per experiment (title -> curves), side by side, one legend."""
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.6 * rows), dpi=110, squeeze=False)
    for axes, (title, curves) in zip(grid.flat, panels.items()):
        _draw_curves(axes, curves, title)
    for axes in list(grid.flat)[len(panels):]:
        axes.axis("off")
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower right" if len(panels) % columns else "upper right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _draw_curves(axes, curves: dict[str, dict[str, list[float]]], title: str) -> None:
    for name, curve in curves.items():
        steps = range(len(curve["mean"]))
        learned = name == LEARNED_NAME
        (line,) = axes.plot(
            steps, curve["mean"], label=name.upper() if learned else name,
            linewidth=2.2 if learned else 1.4, zorder=3 if learned else 2,
        )
        axes.fill_between(steps, curve["low"], curve["high"], color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_yscale("log")
    # A baseline that diverges would squash every other curve; keep the view near the start.
    start = max(curve["mean"][0] for curve in curves.values())
    lowest = min(min(curve["low"]) for curve in curves.values())
    if start > 0 and lowest > 0:
        axes.set_ylim(bottom=lowest / 2, top=start * 3)
    axes.set_xlabel("step")
    axes.set_ylabel("mean loss (95% bootstrap band)")
    axes.set_title(title)
    axes.grid(True, which="major", alpha=0.3)
