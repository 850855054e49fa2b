"""Would a learning-rate schedule help the baselines? Tuned decaying schedules against tuned
constant rates, by the shared protocol, on the test runs of an `optimizer3 evaluate` command.

    python benchmarks/schedules.py evaluate --pretrained mnist-mix --data-dir ../shared/data/mnist \
        --test-problems 100 --tuning-problems 16 --lr-min 1e-3 --lr-max 10 --threads 2 --compile \
        --baselines nag adam nag_linear nag_cosine adam_linear adam_cosine --run-dir runs/schedules

Adds to the baselines, for this process only, NAG and Adam whose learning rate decays over the
run's steps (`--steps`, or the optimizer's meta-training horizon; set `--horizon` here if it
is not 100) to zero, linearly (`_linear`) or by a half cosine (`_cosine`). The tuning protocol
then picks each one's peak rate as it picks a constant rate, in one process (no `--workers`).
A learned optimizer can learn such a schedule; this says how much one is worth to the
baselines on the same runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the optimizer3 command sets it, before torch

import torch  # noqa: E402

from optimizer3 import cli  # noqa: E402
from optimizer3.optim import baselines  # noqa: E402

SHAPES = {
    "linear": lambda fraction: max(1.0 - fraction, 0.0),
    "cosine": lambda fraction: 0.5 * (1.0 + math.cos(math.pi * min(fraction, 1.0))),
}


def scheduled(optimizer_class: type[torch.optim.Optimizer], shape, steps: int, **options):
    """A factory like `baselines.BASELINES`' whose optimizer multiplies every group's learning
    rate by shape(t / steps) before its step t."""

    class Scheduled(optimizer_class):
        def __init__(self, params, lr):
            super().__init__(params, lr=lr, **options)
            for group in self.param_groups:
                group["peak_lr"] = group["lr"]
            self.steps_taken = 0

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                group["lr"] = group["peak_lr"] * shape(self.steps_taken / steps)
            self.steps_taken += 1
            return super().step(closure)

    return Scheduled


def main() -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--steps", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    known, rest = parser.parse_known_args()
    if known.workers != 1:
        # Worker processes import the package afresh, without the baselines added below.
        print(f"schedules.py: --workers {known.workers} is not supported: the scheduled baselines exist "
              "in this process only; leave out --workers", file=sys.stderr)
        return 2
    steps = known.steps or known.horizon
    argv = rest + (["--steps", str(known.steps)] if known.steps else [])
    for name, shape in SHAPES.items():
        baselines.BASELINES[f"nag_{name}"] = scheduled(torch.optim.SGD, shape, steps, momentum=0.9, nesterov=True)
        baselines.BASELINES[f"adam_{name}"] = scheduled(torch.optim.Adam, shape, steps)
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
