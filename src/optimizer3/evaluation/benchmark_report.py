"""The benchmark's report: results.md, a summary table and one table per task, from computed
summaries (`evaluation.benchmark`). Text only: the figure is drawn by `plotting`."""

from __future__ import annotations

import math
from typing import Any

from optimizer3.tasks.suite import HELD_OUT, META_TRAINING


def _number(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


def _interval(ci: list[float]) -> str:
    return f"[{_number(ci[0])}, {_number(ci[1])}]"


def ratio_cell(task: dict[str, Any], learned: str) -> str:
    """A learned optimizer's ratio to the best tuned baseline, or its failures."""
    entry = task["optimizers"][learned]
    if entry["failed"]:
        return f"**failed {entry['failed']}/{entry['problems']}**"
    ratio = task["ratios"][learned].get("best_tuned")
    if ratio is None:
        return "–"
    if ratio["ratio"] is None:
        return "(the best tuned baseline failed runs)"
    text = f"{ratio['ratio']:.2f} {_interval([round(v, 2) if math.isfinite(v) else v for v in ratio['ci']])}"
    return f"**{text}**" if ratio["ratio"] > 1.25 else text


def summary_table(results: dict[str, Any]) -> list[str]:
    learned = results["learned"]
    lines = ["| task | family | split | steps | best tuned | " + " | ".join(learned) + " |",
             "|---" * (5 + len(learned)) + "|"]
    for name, task in results["tasks"].items():
        spec = task["spec"]
        lines.append(f"| {name} | {spec['family']} | {spec['split']} | {spec['steps']} | {task['best_tuned'] or '–'} | "
                     + " | ".join(ratio_cell(task, label) for label in learned) + " |")
    return lines


def overall_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    for label, splits in results["overall"].items():
        for split in (HELD_OUT, META_TRAINING):
            if split not in splits:
                continue
            s = splits[split]
            line = (f"- **{label}**, {split} set ({s['tasks']} tasks): geometric mean ratio {_number(s['geometric_mean_ratio'])}, "
                    f"worst {_number(s['worst_ratio'])}")
            if s["tasks_without_failures"] < s["tasks"]:
                line += (f" ({_number(s['geometric_mean_ratio_without_failures'])} over the "
                         f"{s['tasks_without_failures']} tasks without failed runs)")
            if s.get("no_ratio"):
                line += f"; no ratio where the best tuned baseline failed a run ({', '.join(s['no_ratio'])})"
            line += (f"; failed on {', '.join(s['failed_on']) or 'none'}; "
                    f"behind the best tuned baseline by more than 25% on {', '.join(s['behind_by_25_percent']) or 'none'}")
            untuned = s.get("vs_untuned", {})
            if untuned:
                line += "; against the untuned references (geometric mean ratio where they did not fail): " + ", ".join(
                    f"{name} {_number(value)}" for name, value in untuned.items())
            lines.append(line)
    return lines


def task_table(task: dict[str, Any]) -> list[str]:
    metric = next((entry["test_metric"]["name"] for entry in task["optimizers"].values() if "test_metric" in entry), None)
    header = "| optimizer | lr | final loss, mean [95% CI] | median |" + (f" {metric} |" if metric else "") + " failed |"
    lines = [header, "|---" * (5 + bool(metric)) + "|"]
    for name, entry in task["optimizers"].items():
        lr = "–" if entry["lr"] is None else f"{entry['lr']:.3g}"
        row = f"| {name} | {lr} | {_number(entry['mean'])} {_interval(entry['mean_ci'])} | {_number(entry['median'])} |"
        if metric:
            m = entry.get("test_metric")
            row += f" {m['mean']:.4g} {_interval(m['ci'])} |" if m else " – |"
        failures = f"{entry['failed']}/{entry['problems']}" + (f" ({', '.join(entry['failures'])})" if entry["failed"] else "")
        if "tuning_failed" in entry:
            failures += f" (tuning: {entry['tuning_failed']})"
        lines.append(row + f" {failures} |")
    return lines


def markdown(results: dict[str, Any]) -> str:
    """results.md: what ran, the split, the summary and every task's table."""
    record = results["record"]
    lines = [f"# Benchmark: {', '.join(results['learned']) or 'baselines only'}", "",
             f"Command: `{record['command']}`  ",
             f"Machine: {record['machine_text']}; date {record['date']}; code {record['code_version']}", "",
             "The split (no shipped optimizer is meta-trained on a held-out task):", "",
             *(f"- {line}" for line in results["split"].splitlines()), "",
             "Failed runs (final loss non-finite, above the initial loss, or not below chance for classifiers and "
             "language models) count as infinite losses and are counted apart. Learned optimizers run untuned "
             "(lr 1); tuned baselines: " + ", ".join(results["config"]["tuned"]) + "; untuned references: "
             + ", ".join(results["config"]["untuned"]) + ".", ""]
    if results["learned"]:
        lines += ["## Learned / best tuned baseline", "",
                  "Mean final loss of the learned optimizer over that of the best tuned baseline (the one whose "
                  "tuned rate scored lowest on the validation problems) on the same test problems, with a paired "
                  "bootstrap 95% interval: below 1 the learned optimizer is better; bold: behind by more than 25%, "
                  "or failed runs.", "", *summary_table(results), "", *overall_lines(results), ""]
    lines += ["## Every optimizer on every task", ""]
    for name, task in results["tasks"].items():
        spec = task["spec"]
        lines += [f"### {name}: {spec['description']}", "",
                  f"{spec['split']} set, {spec['steps']} steps, {spec['problems']} test problems, baselines tuned on "
                  f"{spec['tuning_problems']}.", "", *task_table(task), ""]
    return "\n".join(lines)
