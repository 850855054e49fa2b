"""The targets of `general` (issue 30) measured on a benchmark of it.

    python benchmarks/general_targets.py runs/general/benchmark/results.json [--label general]

From the results.json of `optimizer3 reproduce general` (or of `optimizer3 benchmark` with the
optimizer in it): the geometric mean of the final-loss ratio to the best tuned baseline over the
held-out tasks at the default horizon (all, and the networks alone), the worst task, failed
runs, the comparison with each untuned reference task by task, the long-horizon ratios, and the
quadratics against tuned Adam (mean and geometric mean of the final loss).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib

UNTUNED = ("adam-default", "prodigy", "schedule-free")


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def ratio(task: dict, label: str, reference: str) -> float | None:
    entry = task["ratios"][label].get(reference)
    return entry.get("ratio") if isinstance(entry, dict) else entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("--label", default="general")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    label = args.label
    held_out = {name: task for name, task in results["tasks"].items() if task["spec"]["split"] == "held-out"}
    default = {name: task for name, task in held_out.items() if not task["spec"]["long"]}
    long = {name: task for name, task in held_out.items() if task["spec"]["long"]}
    ratios = {name: ratio(task, label, "best_tuned") for name, task in default.items()}
    finite = {name: value for name, value in ratios.items() if value is not None}
    networks = [value for name, value in finite.items() if default[name]["spec"]["family"] != "quadratic"]
    print(f"{label} on {args.results}")
    print(f"held-out, {len(finite)} of {len(default)} tasks with a ratio: geometric mean {geometric_mean(list(finite.values())):.3f}; "
          f"networks alone ({len(networks)}) {geometric_mean(networks):.3f}")
    worst = max(finite, key=finite.get)
    print(f"worst: {worst} {finite[worst]:.3f}; above 1.25 on {', '.join(n for n, v in finite.items() if v > 1.25) or 'none'}")
    failed = {name: task["optimizers"][label]["failed"] for name, task in held_out.items()
              if task["optimizers"][label]["failed"]}
    print(f"failed runs: {failed or 'none'}")
    for reference in UNTUNED:
        better, worse, both_failed, values = [], [], [], []
        for name, task in held_out.items():
            ours, theirs = task["optimizers"][label]["failed"], task["optimizers"][reference]["failed"]
            value = ratio(task, label, reference)
            if value is not None:
                values.append(value)
                (better if value < 1 else worse).append(name)
            elif ours and theirs:
                both_failed.append(name)
            elif theirs:
                better.append(name)  # it failed runs and we did not
            else:
                worse.append(name)  # we failed runs and it did not
        print(f"vs {reference}: better on {len(better)} of {len(held_out)}; not on {', '.join(worse) or 'none'}"
              f"{'; both failed on ' + ', '.join(both_failed) if both_failed else ''}; geometric mean ratio "
              f"where neither failed {geometric_mean(values):.3f} ({len(values)} tasks)")
    for name, task in long.items():
        entry = task["ratios"][label].get("best_tuned") or {}
        print(f"long: {name} {entry.get('ratio')} {entry.get('ci')}")
    for name, task in default.items():
        if task["spec"]["family"] != "quadratic":
            continue
        ours, adam = task["optimizers"][label], task["optimizers"]["adam"]
        mean = (ours["mean"] / adam["mean"]) if ours["mean"] and adam["mean"] else None
        geo = (ours["geometric_mean"] / adam["geometric_mean"]) if ours["geometric_mean"] and adam["geometric_mean"] else None
        print(f"quadratic vs tuned adam: {name} mean {mean} geometric mean {geo} (failed: ours {ours['failed']}, "
              f"adam {adam['failed']})")


if __name__ == "__main__":
    main()
