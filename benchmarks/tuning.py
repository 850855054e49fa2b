"""A baseline's learning-rate tuning on MNIST: every rate run alone against all in lockstep.

    python benchmarks/tuning.py --data-dir ../shared/data/mnist [--threads 1] [--hidden 20]

The shared protocol's first grid as `reproduce mnist` sets it (17 rates, 10^-3 to 10) on the
16 validation MLPs for 100 steps, as `reproduce mnist` tunes each baseline: once with
`run_baseline` per rate (how tuning ran before), once with `run_baselines` (all rates as
copies in lockstep, one first-layer product for all of them, each minibatch gathered once).
Prints seconds for each and whether the two give bit-identical losses and parameters.
`--alone-only` times the separate runs alone, so that the script also runs on code from before
`run_baselines` (PYTHONPATH=OLD_CHECKOUT/src).
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: as each of --workers 2)")
    parser.add_argument("--hidden", type=int, nargs="+", default=[20])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--baselines", nargs="+", default=["sgd", "nag", "rmsprop", "adam"])
    parser.add_argument("--alone-only", action="store_true", help="time only the separate runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from optimizer3.optim.tuning import LearningRateGrid
    from optimizer3.tasks import TaskConfig, make_task_family
    from optimizer3.trajectories import run_baseline

    family = make_task_family(TaskConfig(name="mnist", hidden=tuple(args.hidden)), "heldout", args.data_dir)
    task = family.sample(16, torch.Generator().manual_seed(1))
    lrs = [10.0**exponent for exponent in LearningRateGrid(lr_min=1e-3, lr_max=10.0).exponents()]
    run_baseline("adam", 0.01, task, 5, seed=0)  # warm-up
    results = {}
    for name in args.baselines:
        began = time.perf_counter()
        alone = [run_baseline(name, lr, task, args.steps, seed=0) for lr in lrs]
        results[name] = {"rates": len(lrs), "alone_s": round(time.perf_counter() - began, 2)}
        if not args.alone_only:
            from optimizer3.trajectories import run_baselines

            began = time.perf_counter()
            lockstep = run_baselines(name, lrs, task, args.steps, seed=0)
            seconds = time.perf_counter() - began
            identical = all(torch.equal(a.losses, b.losses) and torch.equal(a.params, b.params)
                            for a, b in zip(alone, lockstep))
            results[name].update({"lockstep_s": round(seconds, 2),
                                  "speed-up": round(results[name]["alone_s"] / seconds, 2), "bit_identical": identical})
        print(name, json.dumps(results[name]), flush=True)


if __name__ == "__main__":
    main()
