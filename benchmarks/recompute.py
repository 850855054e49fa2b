"""Recomputation in meta-training: the package's segments against torch.utils.checkpoint.

    python benchmarks/recompute.py --data-dir ../shared/data/mnist [--threads 1] [--repeats 2]

`--recompute-every` keeps the meta-graph of a few optimizee steps at a time. The package runs
each truncation once without a graph, then segment by segment with one, last first
(`meta.truncated_bptt`). The library way is `torch.utils.checkpoint` around each segment. Both
give the same meta-gradient to rounding; this times them, and the whole truncation's graph
for reference, on MNIST meta-training trajectories (the base network, 2 instances), each case in
a process of its own so that its peak memory (max RSS) is its own. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys

CASE = r"""
import json, resource, sys, time, torch
import torch.utils.checkpoint
sys.path.insert(0, "benchmarks")
from timing import trajectory_runner
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.meta import truncated_bptt
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig

how, unroll, segment, second_order, repeats, threads, data_dir = sys.argv[1:8]
torch.set_num_threads(int(threads))


def checkpointed(meta_params, config, runtime, task, carry, generator, weights):
    # The library way: each segment under torch.utils.checkpoint, its minibatches drawn first.
    for tensor in meta_params.values():
        tensor.grad = None
    meta_loss = None
    for begin in range(0, len(weights), runtime.recompute_every):
        window = weights[begin : begin + runtime.recompute_every]
        batches = [task.sample_batch(generator) for _ in range(len(window))]
        loss, carry = torch.utils.checkpoint.checkpoint(
            truncated_bptt.run_truncation, meta_params, config, runtime, task, carry, None, window, batches,
            use_reentrant=False)
        meta_loss = loss if meta_loss is None else meta_loss + loss
    meta_loss.backward()
    return float(meta_loss.detach()), carry.detach()


if how == "checkpoint":
    from optimizer3.meta import trainer
    trainer.meta_gradient = checkpointed
config = MetaTrainConfig(task=TaskConfig(name="mnist"), problems=2, unroll=int(unroll), second_order=second_order == "1",
                         optimizer=LSTMOptimizerConfig(preprocessing="log_sign", momentum_inputs=(0.5, 0.9, 0.99),
                                                       update_form="gradient_mix", output_init="zeros"))
run = trajectory_runner(config, data_dir, RuntimeConfig(recompute_every=0 if how == "whole" else int(segment)))
run()
times = []
for _ in range(int(repeats)):
    began = time.perf_counter()
    run()
    times.append(time.perf_counter() - began)
print(json.dumps({"seconds": min(times), "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

def total_memory_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


SETTINGS = (("first order, truncations of 100 steps, segments of 20", "100", "20", "0"),
            ("second order, truncations of 20 steps, segments of 5", "20", "5", "1"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--repeats", default="2")
    args = parser.parse_args()
    print("| setting | whole graph | segments (the package) | torch.utils.checkpoint |")
    print("|---|---|---|---|")
    for title, unroll, segment, second_order in SETTINGS:
        cells = []
        for how in ("whole", "segments", "checkpoint"):
            out = subprocess.run([sys.executable, "-c", CASE, how, unroll, segment, second_order, args.repeats,
                                  args.threads, args.data_dir], capture_output=True, text=True)
            if out.returncode == -signal.SIGKILL:  # the kernel's out-of-memory killer, as a rule
                cells.append(f"killed (SIGKILL: out of memory at {total_memory_gb():.0f} GB?)")
                continue
            out.check_returncode()
            result = json.loads(out.stdout.strip().splitlines()[-1])
            cells.append(f"{result['seconds']:.1f} s, {result['max_rss_mb']:.0f} MB")
        print(f"| {title} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
