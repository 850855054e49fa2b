"""Shared by the benchmarks: time meta-training trajectories exactly as `meta_train` runs them."""

from __future__ import annotations

import dataclasses
import time

import torch

from optimizer3.learned.lstm import init_meta_params
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.trainer import loss_weights, train_trajectory
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import make_task_family
from optimizer3.tasks.mlp import activation_names


def trajectory_runner(config: MetaTrainConfig, data_dir: str | None = None, runtime: RuntimeConfig = RuntimeConfig()):
    """A function that meta-trains on one fresh trajectory of `config` per call."""
    generator = torch.Generator().manual_seed(0)
    device = torch.device(runtime.device)
    meta_params = {k: v.to(device).requires_grad_() for k, v in init_meta_params(config.optimizer, generator).items()}
    meta_optimizer = torch.optim.Adam(meta_params.values(), lr=1e-3)
    family = make_task_family(config.task, "train", data_dir, runtime.device)
    weights = loss_weights(config.loss_weights, config.horizon)

    def run() -> None:
        task = family.sample(config.problems, generator)
        train_trajectory(meta_params, meta_optimizer, config, runtime, task, generator, weights)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the last meta-step's kernels belong to this trajectory

    return run


def best_trajectory_seconds(config: MetaTrainConfig, repeats: int, data_dir: str | None = None,
                            runtime: RuntimeConfig = RuntimeConfig()) -> float:
    """Fastest of `repeats` timed trajectories, after one warm-up (allocators, caches)."""
    run = trajectory_runner(config, data_dir, runtime)
    run()
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def best_meta_train_seconds(config: MetaTrainConfig, repeats: int, data_dir: str | None = None,
                            runtime: RuntimeConfig = RuntimeConfig()) -> float:
    """Fastest of `repeats` trajectories of a whole `meta_train` run (after one warm-up
    trajectory; the last, which validates, is not counted): how a run with `runtime.workers`
    processes is timed, each trajectory ending with every process's last meta-step."""
    from optimizer3.meta.trainer import meta_train

    kinds = len(activation_names(config.task.activation))  # validation needs as many instances of each
    run = dataclasses.replace(config, trajectories=repeats + 2, validation_problems=runtime.workers * kinds,
                              validate_every=repeats + 2)
    seconds = [record["seconds"] for record in meta_train(run, runtime, progress=False, data_dir=data_dir).history[1:]]
    return min(b - a for a, b in zip(seconds[:-2], seconds[1:-1]))
