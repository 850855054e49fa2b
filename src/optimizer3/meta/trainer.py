"""Truncated-BPTT meta-training of the learned optimizer.

A trajectory optimizes a fresh batch of problems for `horizon` steps; every `unroll` steps the
summed loss is backpropagated into the LSTM, the meta-optimizer steps, and the carry is
detached (the truncation boundary). The meta-loss is a mean over problems, so a meta-gradient
is an average over a batch of problems and data-parallel training only has to average it.

References: Andrychowicz et al. 2016, section 2 and section 3.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from optimizer3.config import MetaTrainConfig
from optimizer3.trajectories import run_learned, tuning_score
from optimizer3.learned.lstm import MetaParams, init_meta_params
from optimizer3.meta.checkpoint import atomic_save, make_checkpoint
from optimizer3.meta.unroll import Carry, start, unroll
from optimizer3.tasks import Task, make_task_family


@dataclasses.dataclass
class MetaTrainResult:
    """What meta-training produced: the best meta-parameters (early stopping) and the log."""

    best_meta_params: MetaParams
    best_validation: float
    meta_params: MetaParams
    history: list[dict[str, Any]]
    seconds: float


def loss_weights(kind: str, horizon: int) -> torch.Tensor:
    """Meta-loss weight w_t of the loss after each step t = 1..horizon."""
    if kind == "uniform":
        return torch.ones(horizon)
    if kind == "linear":
        return torch.arange(1, horizon + 1, dtype=torch.float32) / horizon
    if kind == "final":
        weights = torch.zeros(horizon)
        weights[-1] = 1.0
        return weights
    raise ValueError(f"Unknown loss weighting: {kind!r}")


def scheduled_lr(config: MetaTrainConfig, trajectory: int) -> float:
    """Meta learning rate for a trajectory: constant, or cosine decay to zero over the run."""
    if config.lr_schedule == "constant":
        return config.meta_lr
    return config.meta_lr * 0.5 * (1.0 + math.cos(math.pi * trajectory / config.trajectories))


def meta_gradient(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator,
    weights: torch.Tensor,
) -> tuple[float, Carry]:
    """Unroll one truncation and leave d(meta-loss)/d(meta-params) in each `.grad`.

    Returns the meta-loss and the carry, detached: this is the truncation boundary.
    """
    meta_loss, carry, _ = unroll(
        meta_params, config.optimizer, task, carry, config.unroll, generator,
        weights=weights, second_order=config.second_order,
    )
    for tensor in meta_params.values():
        tensor.grad = None
    if meta_loss.requires_grad:
        meta_loss.backward()
    return float(meta_loss.detach()), carry.detach()


def train_trajectory(
    meta_params: MetaParams,
    meta_optimizer: torch.optim.Optimizer,
    config: MetaTrainConfig,
    task: Task,
    generator: torch.Generator,
    weights: torch.Tensor,
) -> dict[str, float]:
    """Optimize one batch of problems for the whole horizon, meta-stepping every truncation."""
    carry, _ = start(task, config.optimizer, generator)
    total_loss, max_norm = 0.0, 0.0
    for begin in range(0, config.horizon, config.unroll):
        window = weights[begin : begin + config.unroll]
        loss, carry = meta_gradient(meta_params, config, task, carry, generator, window)
        total_loss += loss
        if not window.any():
            continue  # no loss in this truncation counts: nothing to learn from it
        if config.clip_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(meta_params.values(), config.clip_grad_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in meta_params.values()]))
        max_norm = max(max_norm, float(norm))
        meta_optimizer.step()
    return {"meta_loss": total_loss / float(weights.sum()), "grad_norm": max_norm}


def validate(meta_params: MetaParams, config: MetaTrainConfig, task: Task) -> float:
    """Mean final loss of the learned optimizer on the fixed validation problems."""
    losses = run_learned(meta_params, config.optimizer, task, config.horizon, config.validation_seed).losses
    return tuning_score(losses[-1])


def meta_train(
    config: MetaTrainConfig,
    run_dir: pathlib.Path | None = None,
    progress: bool = True,
    data_dir: str | None = None,
) -> MetaTrainResult:
    """Meta-train from scratch as `config` says; write checkpoints and metrics to `run_dir`.

    Training problems come from the task's meta-training split, validation problems from its
    held-out split (`data_dir` says where to look for data first).
    """
    began = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    meta_params = init_meta_params(config.optimizer, generator)
    for tensor in meta_params.values():
        tensor.requires_grad_()
    meta_optimizer = torch.optim.Adam(meta_params.values(), lr=config.meta_lr)
    family = make_task_family(config.task, "train", data_dir)
    validation_task = make_task_family(config.task, "heldout", data_dir).sample(
        config.validation_problems, torch.Generator().manual_seed(config.validation_seed)
    )
    weights = loss_weights(config.loss_weights, config.horizon)
    best_validation = validate(meta_params, config, validation_task)
    best_meta_params = {k: v.detach().clone() for k, v in meta_params.items()}
    history: list[dict[str, Any]] = [{"trajectory": 0, "validation_loss": best_validation}]
    metrics = (run_dir / "metrics.jsonl").open("w") if run_dir else None
    bar = tqdm(
        range(config.trajectories), desc="meta-train", disable=not progress, unit="traj", mininterval=1.0
    )
    try:
        for trajectory in bar:
            lr = scheduled_lr(config, trajectory)
            for group in meta_optimizer.param_groups:
                group["lr"] = lr
            task = family.sample(config.problems, generator)
            record = {"trajectory": trajectory + 1, "lr": lr}
            record.update(train_trajectory(meta_params, meta_optimizer, config, task, generator, weights))
            done = trajectory + 1
            if done % config.validate_every == 0 or done == config.trajectories:
                record["validation_loss"] = validate(meta_params, config, validation_task)
                if record["validation_loss"] < best_validation:
                    best_validation = record["validation_loss"]
                    best_meta_params = {k: v.detach().clone() for k, v in meta_params.items()}
                if run_dir:
                    checkpoint = make_checkpoint(
                        config, meta_params, best_meta_params, meta_optimizer.state_dict(),
                        done, best_validation, generator.get_state(),
                    )
                    atomic_save(checkpoint, run_dir / "checkpoint.pt")
            record["seconds"] = time.perf_counter() - began
            history.append(record)
            if metrics:
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
            bar.set_postfix(meta_loss=f"{record['meta_loss']:.3g}", best_val=f"{best_validation:.3g}")
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return MetaTrainResult(
        best_meta_params=best_meta_params,
        best_validation=best_validation,
        meta_params={k: v.detach().clone() for k, v in meta_params.items()},
        history=history,
        seconds=time.perf_counter() - began,
    )
