"""Truncated-BPTT meta-training of the learned optimizer.

A trajectory optimizes a fresh batch of problems for `horizon` steps; every `unroll` steps the
meta-gradient estimator (`truncated_bptt`) backpropagates the truncation's loss into the LSTM,
the meta-optimizer steps, and the carry is detached (the truncation boundary). The meta-loss is a mean over problems, so a meta-gradient
is an average over a batch of problems and data-parallel training only has to average it.

A run never loses more than `checkpoint_every` trajectories: checkpoints are written
atomically, also when SIGINT or SIGTERM arrives, and `meta_train(..., resume=checkpoint)`
continues bit for bit as if never stopped (same machine, same thread count). A non-finite
meta-loss or meta-gradient never reaches the meta-parameters: that meta-update is skipped,
counted and logged, and the rest of that trajectory is abandoned.

References: Andrychowicz et al. 2016, section 2 and section 3.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
import math
import pathlib
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from optimizer3 import pretrained
from optimizer3.errors import Optimizer3Error, UsageError
from optimizer3.evaluation.runs import run_learned, tuning_score
from optimizer3.learned.files import load_learned_optimizer
from optimizer3.learned.lstm import MetaParams, init_meta_params
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.meta.distributed import Group, check_size, current_group, run_workers
from optimizer3.meta.run_state import (
    RunFiles, RunState, clone_params, make_meta_optimizer, start_average, state_from_checkpoint, stop_requests,
    update_average,
)
from optimizer3.meta.truncated_bptt import meta_gradient, run_truncation
from optimizer3.meta.unroll import start
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import Task, make_task_family


class MetaTrainingInterrupted(Optimizer3Error):
    """SIGINT or SIGTERM arrived; the run was checkpointed and can be resumed."""


class MetaTrainingDiverged(Optimizer3Error):
    """Too many trajectories in a row ended in a non-finite meta-update; the last good
    checkpoint is kept."""


@dataclasses.dataclass
class MetaTrainResult:
    """What meta-training produced: the best meta-parameters (early stopping) and the log."""

    best_meta_params: MetaParams
    best_validation: float
    meta_params: MetaParams
    history: list[dict[str, Any]]
    seconds: float
    skipped: int


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
    """Meta learning rate for a trajectory: constant, or cosine decay to zero over the run (or
    over `config.schedule_trajectories`, of which the run is the first part)."""
    if config.lr_schedule == "constant":
        return config.meta_lr
    length = config.schedule_trajectories or config.trajectories
    return config.meta_lr * 0.5 * (1.0 + math.cos(math.pi * trajectory / length))


def train_trajectory(
    meta_params: MetaParams,
    meta_optimizer: torch.optim.Optimizer,
    config: MetaTrainConfig,
    runtime: RuntimeConfig,
    task: Task,
    generator: torch.Generator,
    weights: torch.Tensor,
    group: Group = Group(),
    average: MetaParams | None = None,
) -> dict[str, float]:
    """Optimize one batch of problems for the whole horizon, meta-stepping every truncation
    (and moving `average`, the meta-parameters' moving average, after each meta-step).

    In a group of processes, `task` is this process's shard of the trajectory's
    `config.problems` problems, and each meta-gradient is averaged over the group before the
    meta-step. Returns the trajectory's mean meta-loss, the largest meta-gradient norm before
    clipping, and `skipped`: 1 when a non-finite meta-loss or meta-gradient ended the
    trajectory early.
    """
    share = task.num_problems / config.problems
    carry, _ = start(task, config.optimizer, generator)
    total_loss, max_norm, counted = 0.0, 0.0, 0.0
    for begin in range(0, config.horizon, config.unroll):
        window = weights[begin : begin + config.unroll]
        if not window.any():
            # No loss in this truncation counts (`--loss-weights final` but for the last one):
            # nothing to learn from it, so the optimizee only moves on, without a graph.
            with torch.no_grad():
                _, carry = run_truncation(meta_params, config, runtime, task, carry, generator, window)
            continue
        loss, carry = meta_gradient(meta_params, config, runtime, task, carry, generator, window)
        loss = group.average_meta_gradient(meta_params, loss, share)
        norm = float(torch.nn.utils.clip_grad_norm_(meta_params.values(), config.clip_grad_norm or math.inf))
        if not (math.isfinite(loss) and math.isfinite(norm)):
            # Never let a blown-up unroll reach the meta-parameters; the optimizee is lost, so
            # the rest of this trajectory is abandoned too.
            return {"meta_loss": None, "grad_norm": norm if math.isfinite(norm) else None, "skipped": 1}
        total_loss += loss
        counted += float(window.sum())
        max_norm = max(max_norm, norm)
        meta_optimizer.step()
        update_average(average, meta_params, config.average_decay)
    return {"meta_loss": total_loss / max(counted, 1e-12), "grad_norm": max_norm, "skipped": 0}


def validate(
    meta_params: MetaParams, config: MetaTrainConfig, task: Task, group: Group = Group(), compile: bool = False
) -> float:
    """Mean final loss of the learned optimizer on the fixed validation problems, applied as
    evaluation applies it (`evaluation.runs`); in a group, `task` is this process's shard of
    them, and the mean is over all."""
    losses = run_learned((meta_params, config.optimizer), task, config.horizon, config.validation_seed,
                         compile=compile).losses
    return group.average(tuning_score(losses[-1]), task.num_problems / config.validation_problems)


def starting_meta_params(config: MetaTrainConfig, generator: torch.Generator) -> MetaParams:
    """Random meta-parameters, or those of `config.init_from` (fine-tuning, curricula).

    The random ones are drawn either way, so that a run's training problems do not depend on
    where it starts. A starting optimizer must have this run's architecture.
    """
    meta_params = init_meta_params(config.optimizer, generator)
    if not config.init_from:
        return meta_params
    source = load_learned_optimizer(pretrained.resolve(config.init_from))
    loaded, theirs, ours = source.meta_params, source.config, config.optimizer
    if not isinstance(theirs, type(ours)):
        raise UsageError(f"--init-from {config.init_from} is a per-parameter MLP optimizer; meta-train trains the "
                         "LSTM: start from an LSTM optimizer (mnist, mnist-paper, quadratic) or from scratch")
    if dataclasses.replace(theirs, output_init=ours.output_init, output_bias=ours.output_bias) != ours:
        raise UsageError(
            f"--init-from {config.init_from} is an optimizer of architecture {theirs}; this run's is "
            f"{ours}; give the run the same --layers, --hidden-size, --preprocessing, --preprocess-p, "
            "--output-scale, --update-form, --mix-scale, --mix-rms-decay, --momentum-inputs and "
            "--momentum-bias-correction"
        )
    return {name: tensor.detach().clone().to(meta_params[name].dtype) for name, tensor in loaded.items()}


def _fresh_state(config: MetaTrainConfig, runtime: RuntimeConfig, validation_task: Task, group: Group) -> RunState:
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(runtime.device)
    meta_params = {k: v.to(device).requires_grad_() for k, v in starting_meta_params(config, generator).items()}
    validation = validate(meta_params, config, validation_task, group, runtime.compile)
    return RunState(
        average_params=start_average(meta_params, config),
        meta_params=meta_params,
        meta_optimizer=make_meta_optimizer(meta_params, config),
        generator=generator,
        trajectory=0,
        best_meta_params=clone_params(meta_params),
        best_validation=validation,
        validations=[{"trajectory": 0, "validation_loss": validation}],
    )


def meta_train(
    config: MetaTrainConfig,
    runtime: RuntimeConfig = RuntimeConfig(),
    run_dir: pathlib.Path | None = None,
    progress: bool = True,
    data_dir: str | None = None,
    resume: dict[str, Any] | None = None,
) -> MetaTrainResult:
    """Meta-train as `config` says, from scratch or from a loaded checkpoint (`resume`).

    Training problems come from the task's meta-training split, validation problems from its
    held-out split (`data_dir` says where to look for data first). With a `run_dir`, metrics
    go to metrics.jsonl and checkpoints to checkpoint.pt, and SIGINT or SIGTERM ends the run
    after the current trajectory with a checkpoint and `MetaTrainingInterrupted`. The run
    computes as `runtime` says (on `runtime.device`); the meta-parameters it returns and saves
    are on the CPU.

    With `runtime.workers` > 1, or in a process group that a launcher such as torchrun made,
    the processes split every trajectory's problems and average the meta-gradient
    (`meta.distributed`); process 0 alone writes to `run_dir` and shows progress, and every
    process returns the same result.
    """
    group = current_group()
    if runtime.workers > 1 and group.size == 1:
        check_size(runtime.workers, config.problems, config.validation_problems)
        return run_workers(_worker, (config, runtime, data_dir, resume), runtime.workers,
                           lambda: meta_train(config, runtime, run_dir, progress, data_dir, resume))
    check_size(group.size, config.problems, config.validation_problems)
    if not group.leader:
        run_dir, progress = None, False
    began = time.perf_counter()
    family = make_task_family(config.task, "train", data_dir, runtime.device)
    validation_task = group.shard(make_task_family(config.task, "heldout", data_dir, runtime.device).sample(
        config.validation_problems, torch.Generator().manual_seed(config.validation_seed)
    ))
    weights = loss_weights(config.loss_weights, config.horizon)
    state = (state_from_checkpoint(config, resume, runtime.device) if resume
             else _fresh_state(config, runtime, validation_task, group))
    checksum = state.trajectory + sum(float(p.detach().double().sum()) for p in state.meta_params.values())
    if not group.same(checksum):
        raise Optimizer3Error(
            "The processes of this run start from different meta-parameters (different copies of the "
            "checkpoint on different machines?); give every process the same run directory"
        )
    history: list[dict[str, Any]] = list(state.validations[:1]) if not resume else []
    files = RunFiles(run_dir, state.trajectory, fresh=not resume) if run_dir else None
    bar = tqdm(range(state.trajectory, config.trajectories), desc="meta-train", disable=not progress,
               unit="traj", mininterval=1.0, initial=state.trajectory, total=config.trajectories)
    try:
        with stop_requests(run_dir is not None or group.size > 1) as requests:
            for _ in bar:
                record = _advance(config, runtime, state, family, weights, validation_task, group)
                done = state.trajectory
                record["seconds"] = time.perf_counter() - began
                history.append(record)
                if files:
                    files.record(record)
                stopping = group.any(bool(requests))
                if files and (done % config.checkpoint_every == 0 or done == config.trajectories or stopping):
                    files.save(config, state)
                if stopping:
                    saved = (f"checkpoint saved; continue with: optimizer3 meta-train --resume {run_dir}" if run_dir
                             else "no checkpoint here" if group.leader else "process 0 saved the checkpoint")
                    raise MetaTrainingInterrupted(
                        f"Interrupted after trajectory {done} of {config.trajectories}; {saved}"
                    )
                bar.set_postfix(meta_loss=record["meta_loss"], best_val=f"{state.best_validation:.3g}",
                                skipped=state.skipped)
    finally:
        bar.close()
        if files:
            files.close()
    return MetaTrainResult(
        best_meta_params=state.best_meta_params,
        best_validation=state.best_validation,
        meta_params=clone_params(state.meta_params),
        history=history,
        seconds=time.perf_counter() - began,
        skipped=state.skipped,
    )


def as_worker(run: Callable[[], Any]) -> None:
    """`run()`, a meta-training's share in a worker process that `runtime.workers` started:
    process 0 saves checkpoints and reports errors, so a worker only stops."""
    try:
        run()
    except MetaTrainingInterrupted:
        pass  # process 0 saved the checkpoint and says so
    except Optimizer3Error:
        raise SystemExit(2) from None  # process 0 meets the same error and says so


def _worker(config: MetaTrainConfig, runtime: RuntimeConfig, data_dir: str | None, resume: dict[str, Any] | None) -> None:
    """`meta_train` in a worker process that `runtime.workers` started: its share of the run."""
    as_worker(lambda: meta_train(config, runtime, None, progress=False, data_dir=data_dir, resume=resume))


def _advance(
    config: MetaTrainConfig, runtime: RuntimeConfig, state: RunState, family, weights: torch.Tensor,
    validation_task: Task, group: Group,
) -> dict[str, Any]:
    """Train one trajectory on fresh problems, validating when due; update `state` in place.

    Returns the trajectory's record; raises `MetaTrainingDiverged` after `max_skips` skipped
    trajectories in a row (before anything of them is saved).
    """
    trajectory = state.trajectory
    lr = scheduled_lr(config, trajectory)
    for param_group in state.meta_optimizer.param_groups:
        param_group["lr"] = lr
    task = group.shard(family.sample(config.problems, state.generator))
    record = {"trajectory": trajectory + 1, "lr": lr}
    record.update(train_trajectory(state.meta_params, state.meta_optimizer, config, runtime, task, state.generator,
                                   weights, group, state.average_params))
    state.trajectory = done = trajectory + 1
    state.skipped += record["skipped"]
    state.consecutive_skips = state.consecutive_skips + 1 if record["skipped"] else 0
    record["skipped_total"] = state.skipped
    if state.consecutive_skips >= config.max_skips:
        raise MetaTrainingDiverged(
            f"Meta-training diverged: {state.consecutive_skips} trajectories in a row ended in a "
            f"meta-update with a non-finite loss or gradient (trajectory {done}); the last good "
            "checkpoint is kept; lower --meta-lr or set --loss-clip"
        )
    if done % config.validate_every == 0 or done == config.trajectories:
        validated = state.validated_params()
        record["validation_loss"] = validate(validated, config, validation_task, group, runtime.compile)
        state.validations.append({"trajectory": done, "validation_loss": record["validation_loss"]})
        if record["validation_loss"] < state.best_validation:
            state.best_validation = record["validation_loss"]
            state.best_meta_params = clone_params(validated)
    return record
