"""Speed and quality of quadratic meta-training; the figures in BENCHMARKS.md come from here.

    python benchmarks/quadratic.py                 # throughput, evaluation speed, quality
    python benchmarks/quadratic.py --skip-quality  # only the timings (about a minute)

(a) Meta-training throughput in optimizee coordinate-steps per second, forward and
    meta-backward together, for several numbers of problems per trajectory.
(b) Evaluation time of 1,000 problems x 5 optimizers x 100 steps (tuning excluded).
(c) Quality: `optimizer3 reproduce quadratic` with its defaults, timed end to end; the ratios
    of the learned optimizer's mean and geometric-mean final loss to the best tuned baseline's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import torch

from optimizer3.config import MetaTrainConfig
from optimizer3.learned.lstm import init_meta_params
from optimizer3.meta.trainer import loss_weights, train_trajectory
from optimizer3.report import machine_description
from optimizer3.tasks import TaskConfig, make_task_family
from optimizer3.trajectories import run_baseline, run_learned


def throughput(problems: int, dim: int, repeats: int) -> float:
    """Coordinate-steps per second of meta-training (best of `repeats` trajectories)."""
    config = MetaTrainConfig(task=TaskConfig(dim=dim), problems=problems)
    generator = torch.Generator().manual_seed(0)
    meta_params = {k: v.requires_grad_() for k, v in init_meta_params(config.optimizer, generator).items()}
    meta_optimizer = torch.optim.Adam(meta_params.values(), lr=1e-3)
    family = make_task_family(config.task)
    weights = loss_weights(config.loss_weights, config.horizon)
    best = float("inf")
    for repeat in range(repeats + 1):
        task = family.sample(problems, generator)
        began = time.perf_counter()
        train_trajectory(meta_params, meta_optimizer, config, task, generator, weights)
        if repeat:  # the first trajectory warms up allocators and caches
            best = min(best, time.perf_counter() - began)
    return problems * dim * config.horizon / best


def evaluation_seconds() -> float:
    """Seconds to run 1,000 problems x (learned + 4 baselines) x 100 steps."""
    config = MetaTrainConfig()
    family = make_task_family(config.task)
    task = family.sample(1000, torch.Generator().manual_seed(2))
    meta_params = init_meta_params(config.optimizer, torch.Generator().manual_seed(0))
    began = time.perf_counter()
    run_learned(meta_params, config.optimizer, task, 100, seed=2)
    for name, lr in (("sgd", 0.01), ("nag", 0.01), ("rmsprop", 0.01), ("adam", 0.1)):
        run_baseline(name, lr, task, 100, seed=2)
    return time.perf_counter() - began


def quality() -> dict:
    """Run the README's main command with its defaults; return its ratios and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = pathlib.Path(tmp) / "quadratic"
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "optimizer3", "reproduce", "quadratic", "--run-dir", str(run_dir),
             "--quiet"],
            check=True, stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - began
        results = json.loads((run_dir / "results.json").read_text())
    return {"wall_seconds": seconds, "ratios": results["ratios"],
            "meta_training_seconds": results["meta_training_seconds"],
            "final_mean": {k: v["mean"] for k, v in results["summaries"].items()},
            "final_geometric_mean": {k: v["geometric_mean"] for k, v in results["summaries"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-quality", action="store_true", help="timings only")
    parser.add_argument("--repeats", type=int, default=3, help="timed trajectories per setting")
    parser.add_argument("--out", type=pathlib.Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "machine": machine_description(),
        "throughput": {},
    }
    print(f"machine: {report['machine']}")
    for problems in (32, 128, 512, 2048):
        rate = throughput(problems, 10, args.repeats)
        report["throughput"][f"{problems}x10"] = rate
        print(f"meta-training throughput, {problems} problems x 10 coordinates: {rate:,.0f} coordinate-steps/s")
    report["evaluation_seconds"] = evaluation_seconds()
    print(f"evaluation, 1000 problems x 5 optimizers x 100 steps: {report['evaluation_seconds']:.2f} s")
    if not args.skip_quality:
        report["quality"] = quality()
        q = report["quality"]
        print(f"reproduce quadratic (defaults): {q['wall_seconds']:.0f} s wall, "
              f"meta-training {q['meta_training_seconds']:.0f} s")
        for name, value in q["ratios"].items():
            print(f"  {name.replace('_', ' ')}: {value:.3f}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
