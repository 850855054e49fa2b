"""Figures from computed curves. Plotting only plots: every number arrives computed."""

from __future__ import annotations

import math
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


def plot_benchmark(rows: list[dict], learned: list[str], path: pathlib.Path, title: str) -> None:
    """Each learned optimizer's ratio to the best tuned baseline per task, on a log axis.

    Args:
      rows: one per task, in order: {"name", "family", "held_out", "ratios": {learned name:
        (ratio, low, high) or None}, "failed": {learned name: "k/n" or ""}}. Tasks are grouped
        by family; held-out tasks are shaded; a learned optimizer's failed runs are drawn as a
        red cross at the top of the axis with their count, never as a ratio.
      learned: the learned optimizers, one marker each.
      path: where to write the PNG.
    """
    figure, axes = plt.subplots(figsize=(max(6.4, 0.5 * len(rows) + 3), 4.8), dpi=120)
    finite = [value for row in rows for r in row["ratios"].values() if r for value in r if math.isfinite(value) and value > 0]
    low, top = min(finite + [0.5]) / 1.5, max(finite + [2.0]) * 3
    markers = "osD^v"
    for x, row in enumerate(rows):
        if row["held_out"]:
            axes.axvspan(x - 0.5, x + 0.5, color="0.92", zorder=0, linewidth=0)
    for k, name in enumerate(learned):
        offset = (k - (len(learned) - 1) / 2) * 0.26
        for x, row in enumerate(rows):
            if row["failed"].get(name):
                axes.plot(x + offset, top / 1.2, marker="X", color=f"C{k}", markeredgecolor="red", markersize=9, zorder=4)
                axes.annotate(row["failed"][name], (x + offset, top / 1.2), textcoords="offset points", xytext=(0, -8),
                              ha="center", va="top", rotation=90, fontsize=6, color="red")
                continue
            ratio = row["ratios"].get(name)
            if not ratio:
                continue
            value, lo, hi = (min(v, top) for v in ratio)
            axes.errorbar(x + offset, value, yerr=[[value - lo], [hi - value]], fmt=markers[k % len(markers)],
                          color=f"C{k}", capsize=2, markersize=5, zorder=3, label=name if x == _first(rows, name) else None)
    axes.axhline(1.0, color="black", linewidth=1, zorder=1)
    axes.set_yscale("log")
    axes.set_ylim(low, top)
    axes.set_xlim(-0.5, len(rows) - 0.5)
    axes.set_xticks(range(len(rows)), [row["name"] for row in rows], rotation=60, ha="right", fontsize=7)
    for x in range(1, len(rows)):  # a line between families
        if rows[x]["family"] != rows[x - 1]["family"]:
            axes.axvline(x - 0.5, color="0.6", linewidth=0.8, linestyle=":")
    axes.set_ylabel("mean final loss / best tuned baseline's")
    axes.set_title(title + "  (shaded: held-out tasks; X at the top: failed runs, with their count)", fontsize=9)
    axes.grid(True, axis="y", which="major", alpha=0.3)
    if learned:
        axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _first(rows: list[dict], name: str) -> int | None:
    """The first task where `name` has a ratio drawn (its legend entry goes there)."""
    return next((x for x, row in enumerate(rows) if row["ratios"].get(name) and not row["failed"].get(name)), None)
