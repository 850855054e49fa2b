"""Result files of a comparison: results.json, results.md and loss_curves.png, written atomically."""

from __future__ import annotations

import datetime
import json
import math
import pathlib
from typing import Any

from optimizer3.evaluation.compare import LEARNED, Comparison
from optimizer3.evaluation.plotting import plot_loss_curves
from optimizer3.files import atomic_path, write_text_atomic
from optimizer3.provenance import code_version, describe_machine, machine


def _fmt(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.3g}"


def _interval(summary: dict[str, Any], key: str, scale=lambda v: v) -> str:
    low, high = summary[f"{key}_ci"]
    return f"{_fmt(scale(summary[key]))} [{_fmt(scale(low))}, {_fmt(scale(high))}]"


def markdown_table(comparison: Comparison) -> str:
    """The summary table: one row per optimizer, 95% bootstrap intervals in brackets."""
    power = lambda v: 10.0**v  # noqa: E731 - geometric mean from mean log10
    accuracy = all("test_accuracy" in summary for summary in comparison.summaries.values())
    header = "| optimizer | learning rate | mean final loss | median final loss | geometric mean final loss | diverged |"
    lines = [header + (" test accuracy |" if accuracy else ""),
             "|---|---|---|---|---|---|" + ("---|" if accuracy else "")]
    for name, summary in comparison.summaries.items():
        lr = comparison.learning_rates.get(name)
        row = (
            f"| {name} | {'learned' if lr is None else f'{lr:.3g}'} | {_interval(summary, 'mean')} | "
            f"{_interval(summary, 'median')} | {_interval(summary, 'mean_log10', power)} | "
            f"{summary['diverged']} |"
        )
        if accuracy:
            row += f" {_interval(summary, 'test_accuracy')} |"
        lines.append(row)
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    # JSON has no infinity: a diverged statistic is written as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_results(
    run_dir: pathlib.Path,
    comparison: Comparison,
    config: dict[str, Any],
    title: str,
    command: str,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write results.json, results.md and loss_curves.png into `run_dir`; return the table."""
    table = markdown_table(comparison)
    has_learned = LEARNED in comparison.summaries and len(comparison.summaries) > 1
    ratios = comparison.ratios() if has_learned else {}
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine_info = machine()
    results = {
        "title": title,
        "command": command,
        "date": date,
        "machine": machine_info,
        "code_version": code_version(),
        "config": config,
        "steps": comparison.steps,
        "learning_rates": comparison.learning_rates,
        "ratios": ratios,
        "summaries": comparison.summaries,
        "tuning": comparison.tuning,
        "curves": comparison.curves,
        "seconds": comparison.seconds,
        "prefix_of": comparison.prefix_of,
        **(extra or {}),
    }
    text = json.dumps(json_safe(results), indent=1, allow_nan=False)
    write_text_atomic(run_dir / "results.json", text + "\n")
    with atomic_path(run_dir / "loss_curves.png") as tmp:
        plot_loss_curves(comparison.curves, tmp, title)
    ratio_lines = "".join(
        f"- {name.replace('_', ' ')}: {value:.3f}\n" for name, value in ratios.items()
    )
    markdown = (
        f"# {title}\n\n"
        f"Final loss after {comparison.steps} steps on {config.get('evaluation', {}).get('test_problems', '?')} "
        "held-out test problems; 95% bootstrap intervals in brackets. Baseline learning rates "
        "were tuned on the validation problems.\n\n"
        f"{table}\n\n"
        + (f"Learned optimizer relative to the best tuned baseline:\n{ratio_lines}\n" if ratio_lines else "")
        + (f"These runs are the first {comparison.steps} steps of the {comparison.prefix_of}-step runs on the "
           "same problems (where the tuned learning rate is the same), which equal runs of "
           f"{comparison.steps} steps; seconds count only the runs made for this table alone.\n\n"
           if comparison.prefix_of else "")
        + f"![loss curves](loss_curves.png)\n\n"
        f"Command: `{command}`  \nDate: {date}  \nCode: {results['code_version']}  \n"
        f"Machine: {describe_machine(machine_info)}\n"
    )
    write_text_atomic(run_dir / "results.md", markdown)
    return table
