"""Where one MNIST meta-training trajectory spends its time: torch.profiler's table of operators.

    python benchmarks/profile_mnist.py --data-dir ../shared/data/mnist [--instances 4]
        [--compile] [--matmul-dtype bfloat16] [--threads 1]

The trajectory of benchmarks/mnist.py (the paper's LSTM, unroll 20) after one warm-up. With
`--compile` the LSTM step's fused forward and backward show as "CompiledFxGraph" rows, the
matrix products as aten::mm.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from optimizer3.learned.lstm import LSTMOptimizerConfig  # noqa: E402
from optimizer3.meta.config import MetaTrainConfig  # noqa: E402
from optimizer3.runtime import RuntimeConfig  # noqa: E402
from optimizer3.tasks import TaskConfig  # noqa: E402
from timing import trajectory_runner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--matmul-dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=25, help="operators shown")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = MetaTrainConfig(
        task=TaskConfig(name="mnist", hidden=(20,)),
        optimizer=LSTMOptimizerConfig(preprocessing="log_sign", output_init="zeros"),
        problems=args.instances,
    )
    run = trajectory_runner(config, args.data_dir, RuntimeConfig(compile=args.compile, matmul_dtype=args.matmul_dtype))
    run()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        run()
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows,
                                        max_name_column_width=60))


if __name__ == "__main__":
    main()
