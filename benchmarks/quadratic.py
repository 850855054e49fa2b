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

from optimizer3.evaluation.runs import run_baseline, run_learned
from optimizer3.learned.lstm import init_meta_params
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.provenance import machine as machine_description
from optimizer3.tasks import TaskConfig, make_task_family
from timing import best_trajectory_seconds, trajectory_runner


def throughput(problems: int, dim: int, repeats: int) -> float:
    """Coordinate-steps per second of meta-training (best of `repeats` trajectories)."""
    config = MetaTrainConfig(task=TaskConfig(dim=dim), problems=problems)
    return problems * dim * config.horizon / best_trajectory_seconds(config, repeats)


VIEW_OPS = {"aten::view", "aten::slice", "aten::as_strided", "aten::narrow", "aten::unsqueeze",
            "aten::squeeze", "aten::chunk", "aten::split", "aten::t", "aten::transpose",
            "aten::expand", "aten::empty", "aten::empty_strided", "aten::detach", "aten::alias",
            "aten::resolve_conj", "aten::resolve_neg", "aten::to", "aten::_to_copy", "aten::copy_",
            "aten::reshape", "aten::empty_like", "aten::zeros_like", "aten::select", "aten::stack",
            "aten::_reshape_alias", "aten::unbind", "aten::item", "aten::_local_scalar_dense",
            "aten::permute", "aten::contiguous", "aten::zero_", "aten::fill_", "aten::lift_fresh",
            "aten::result_type", "aten::is_nonzero"}
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm"}


def profile_breakdown(problems: int = 128) -> dict[str, float]:
    """Compute operations per optimizee step, and the matrix products' share of operator time."""
    config = MetaTrainConfig(problems=problems)
    run = trajectory_runner(config)
    run()
    with torch.profiler.profile() as profiler:
        run()
    events = [e for e in profiler.key_averages() if e.key.startswith("aten::")]
    compute = sum(e.count for e in events if e.key not in VIEW_OPS)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    total = sum(e.self_cpu_time_total for e in events)
    return {"compute_ops_per_step": compute / config.horizon, "matmul_share": matmul / total}


def evaluation_seconds() -> float:
    """Seconds to run 1,000 problems x (learned + 4 baselines) x 100 steps."""
    config = MetaTrainConfig()
    family = make_task_family(config.task)
    task = family.sample(1000, torch.Generator().manual_seed(2))
    meta_params = init_meta_params(config.optimizer, torch.Generator().manual_seed(0))
    began = time.perf_counter()
    run_learned((meta_params, config.optimizer), task, 100, seed=2)
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
    parser.add_argument("--profile", action="store_true", help="also count operations per step")
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
    if args.profile:
        report["profile"] = profile_breakdown()
        print(f"profile at 128 x 10: {report['profile']['compute_ops_per_step']:.0f} compute ops per step, "
              f"matrix products {report['profile']['matmul_share']:.0%} of operator time")
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
