"""Speed of MNIST meta-training: seconds per trajectory per optimizee instance.

    python benchmarks/mnist.py --data-dir ../shared/data/mnist [--compile] [--threads N] [--device cuda]
        [--unroll 100 --recompute-every 20] [--matmul-dtype bfloat16] [--workers 1 2]

One trajectory is 100 steps of an MLP with batch 128, the learned optimizer's forward pass and
the meta-backward through it (truncations of `--unroll` steps, 20 by default, with the meta-optimizer's steps), as
in `optimizer3 meta-train --task mnist`. Reported for several numbers of instances per
trajectory and network sizes; best of `--repeats` trajectories after one warm-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402

from optimizer3.learned.lstm import LSTMOptimizerConfig  # noqa: E402
from optimizer3.meta.config import MetaTrainConfig  # noqa: E402
from optimizer3.provenance import machine as machine_description  # noqa: E402
from optimizer3.runtime import RuntimeConfig  # noqa: E402
from optimizer3.tasks import TaskConfig, make_task_family  # noqa: E402
from timing import best_meta_train_seconds, best_trajectory_seconds  # noqa: E402


def seconds_per_trajectory(
    hidden: tuple[int, ...], instances: int, repeats: int, data_dir: str | None, compile: bool, device: str,
    unroll: int = 20, recompute_every: int = 0, matmul_dtype: str = "float32", workers: int | None = None,
) -> float:
    config = MetaTrainConfig(
        task=TaskConfig(name="mnist", hidden=hidden),
        optimizer=LSTMOptimizerConfig(preprocessing="log_sign", output_init="zeros"),
        problems=instances,
        unroll=unroll,
    )
    runtime = RuntimeConfig(recompute_every=recompute_every, compile=compile, matmul_dtype=matmul_dtype,
                            device=device)
    if workers is not None:  # through meta_train, which starts the worker processes
        return best_meta_train_seconds(config, repeats, data_dir, dataclasses.replace(runtime, workers=workers))
    return best_trajectory_seconds(config, repeats, data_dir, runtime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--compile", action="store_true", help="the LSTM step through torch.compile")
    parser.add_argument("--only-base", action="store_true",
                        help="only the base network (with 2 instances unless --instances says)")
    parser.add_argument("--unroll", type=int, default=20, help="steps per truncation (100: the whole horizon)")
    parser.add_argument("--recompute-every", type=int, default=0,
                        help="hold the meta-graph of this many steps at a time (0: the whole truncation's)")
    parser.add_argument("--matmul-dtype", default="float32", choices=("float32", "bfloat16"),
                        help="dtype of the LSTM's matrix products")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="time whole meta-training runs (`meta_train`) with each of these numbers of "
                             "processes, each with an equal share of --threads (default: one trajectory "
                             "function in this process)")
    parser.add_argument("--instances", type=int, nargs="+", default=None,
                        help="instance counts for the base network (default: 1 2 4)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"machine: {machine_description()}")
    base = tuple(((20,), count) for count in (args.instances or ((2,) if args.only_base else (1, 2, 4))))
    cases = base if args.only_base else base + (((40,), 1), ((20, 20), 1))
    for hidden, instances in cases:
        for workers in args.workers or (None,):
            seconds = seconds_per_trajectory(hidden, instances, args.repeats, args.data_dir, args.compile,
                                             args.device, args.unroll, args.recompute_every, args.matmul_dtype,
                                             workers)
            coordinates = make_task_family(TaskConfig(name="mnist", hidden=hidden), "train", args.data_dir) \
                .sample(1, torch.Generator()).dim
            processes = "" if workers is None else f", {workers} process(es)"
            print(f"hidden {list(hidden)}, {instances} instance(s) of {coordinates} parameters{processes}: "
                  f"{seconds:.2f} s per trajectory, {seconds / instances:.2f} s per instance, "
                  f"{coordinates * instances * 100 / seconds:,.0f} coordinate-steps/s", flush=True)


if __name__ == "__main__":
    main()
