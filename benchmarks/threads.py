"""How torch's thread count fares when the machine is shared: the figures behind `--threads 0`.

    python benchmarks/threads.py [--data-dir ../shared/data/mnist] [--repeats 3]

Each workload runs in a fresh process with 1, 2, ... threads (up to the machine's cores), alone
and then beside one other torch process that keeps every core busy with matrix products at
torch's default thread count (a second user, a second run). Prints the median seconds of each,
and how many times slower the shared run is than the fastest run alone. Run it alone on the
machine.

Workloads: a quadratic meta-training trajectory (reproduce quadratic's), an MNIST
meta-training trajectory (2 instances, the MNIST recipes'), a `LearnedOptimizer.step()` on a
one-million-parameter MLP (an evaluation's or a user's), and the baselines' lockstep tuning
runs on MNIST MLPs (an evaluation's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

WORKLOAD = r"""
import json, statistics, sys, time, torch
name, threads, repeats, data_dir = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
torch.set_num_threads(threads)
sys.path.insert(0, "benchmarks")
from timing import trajectory_runner
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.tasks import TaskConfig

if name == "quadratic-trajectory":
    run = trajectory_runner(MetaTrainConfig())
elif name == "mnist-trajectory":
    config = MetaTrainConfig(task=TaskConfig(name="mnist"), problems=2, optimizer=LSTMOptimizerConfig(
        preprocessing="log_sign", momentum_inputs=(0.5, 0.9, 0.99), update_form="gradient_mix", output_init="zeros"))
    run = trajectory_runner(config, data_dir)
elif name == "learned-step-1M":
    from optimizer3.optim.learned import LearnedOptimizer
    model = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.Sigmoid(), torch.nn.Linear(1024, 256),
                                torch.nn.Sigmoid(), torch.nn.Linear(256, 10))
    optimizer = LearnedOptimizer.from_pretrained("mnist", model.parameters(), threads=0)  # torch's count
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    run = optimizer.step
elif name == "mnist-tuning":
    from optimizer3.evaluation.runs import run_baselines
    from optimizer3.tasks import make_task_family
    task = make_task_family(TaskConfig(name="mnist"), "heldout", data_dir).sample(16, torch.Generator())
    run = lambda: run_baselines("nag", [10 ** (e / 4) for e in range(-12, 5)], task, 20, seed=0)
run()
times = []
for _ in range(repeats):
    began = time.perf_counter()
    run()
    times.append(time.perf_counter() - began)
print(json.dumps(statistics.median(times)))
"""

COMPETITOR = r"""
import torch
a = torch.randn(1024, 1024)
while True:
    a = torch.tanh(a @ a * 1e-3)
"""

WORKLOADS = ("quadratic-trajectory", "mnist-trajectory", "learned-step-1M", "mnist-tuning")


def measure(name: str, threads: int, repeats: int, data_dir: str) -> float:
    out = subprocess.run([sys.executable, "-c", WORKLOAD, name, str(threads), str(repeats), data_dir],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="", help="MNIST directory")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    args = parser.parse_args()
    counts = list(range(1, (os.cpu_count() or 1) + 1))
    results = {}
    for name in args.workloads:
        alone = {t: measure(name, t, args.repeats, args.data_dir) for t in counts}
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR])
        try:
            time.sleep(2)  # let it start working
            shared = {t: measure(name, t, args.repeats, args.data_dir) for t in counts}
        finally:
            competitor.kill()
            competitor.wait()
        results[name] = (alone, shared)
        best = min(alone.values())
        cells = " | ".join(f"{alone[t]:.3g} s | {shared[t]:.3g} s ({shared[t] / best:.1f}x)" for t in counts)
        print(f"| {name} | {cells} |", flush=True)
    from optimizer3.provenance import describe_machine, machine

    print(f"\nmachine: {describe_machine(machine())}; median of {args.repeats}; 'x': shared over the fastest alone")
    print("threads:", ", ".join(map(str, counts)))
    print(json.dumps({k: {"alone": a, "shared": s} for k, (a, s) in results.items()}))


if __name__ == "__main__":
    main()
