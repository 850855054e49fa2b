"""Truncated-BPTT meta-training of the learned optimizer.

A trajectory optimizes a fresh batch of problems for `horizon` steps; every `unroll` steps the
summed loss is backpropagated into the LSTM, the meta-optimizer steps, and the carry is
detached (the truncation boundary). The meta-loss is a mean over problems, so a meta-gradient
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
import json
import math
import pathlib
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from optimizer3 import pretrained
from optimizer3.config import MetaTrainConfig
from optimizer3.errors import Optimizer3Error, UsageError
from optimizer3.learned.lstm import LSTMState, MetaParams, init_meta_params
from optimizer3.meta.checkpoint import load_learned_optimizer
from optimizer3.meta.distributed import Group, check_size, current_group, run_workers
from optimizer3.meta.run_state import (
    RunState, clone_params, make_meta_optimizer, open_metrics, save_state, start_average,
    state_from_checkpoint, stop_requests, update_average,
)
from optimizer3.meta.unroll import Carry, start, unroll
from optimizer3.tasks import Task, make_task_family
from optimizer3.trajectories import run_learned, tuning_score


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
    if 0 < config.recompute_every < config.unroll:
        return segmented_meta_gradient(meta_params, config, task, carry, generator, weights)
    meta_loss, carry = _unroll(meta_params, config, task, carry, generator, weights)
    for tensor in meta_params.values():
        tensor.grad = None
    if meta_loss.requires_grad:
        meta_loss.backward()
    return float(meta_loss.detach()), carry.detach()


def segmented_meta_gradient(
    meta_params: MetaParams,
    config: MetaTrainConfig,
    task: Task,
    carry: Carry,
    generator: torch.Generator,
    weights: torch.Tensor,
) -> tuple[float, Carry]:
    """`meta_gradient` holding the graph of `config.recompute_every` steps at a time.

    The truncation first runs without a graph, keeping where each segment starts (its carry
    and the generator's state, so that it draws the same minibatches again). Then, last segment
    first, each segment runs again with a graph and is differentiated: its own meta-loss, plus
    the gradient that the later segments' meta-loss sends back into its end (their parameters
    and LSTM state), which gives the gradient to its start for the segment before it. The sum
    is the truncation's meta-gradient (the same as `meta_gradient` computes, to rounding).
    """
    segment, second_order = config.recompute_every, config.second_order
    starts = []
    with torch.no_grad():
        for begin in range(0, config.unroll, segment):
            starts.append((begin, carry, generator.get_state()))
            _, carry = _unroll(meta_params, config, task, carry, generator, weights[begin : begin + segment])
    end_state = generator.get_state()
    for tensor in meta_params.values():
        tensor.grad = None
    total, adjoint = 0.0, None
    for begin, start_carry, rng in reversed(starts):
        generator.set_state(rng)
        leaves = [tensor.detach().requires_grad_(begin > 0) for tensor in _carried(start_carry, second_order)]
        start_carry = _with_carried(start_carry, leaves, second_order)
        meta_loss, end = _unroll(meta_params, config, task, start_carry, generator, weights[begin : begin + segment])
        outputs, grads = [meta_loss], [torch.ones_like(meta_loss)]
        if adjoint is not None:
            pairs = [(out, grad) for out, grad in zip(_carried(end, second_order), adjoint)
                     if grad is not None and out.requires_grad]
            outputs += [out for out, _ in pairs]
            grads += [grad for _, grad in pairs]
        if any(output.requires_grad for output in outputs):
            torch.autograd.backward(outputs, grads)
        adjoint = [leaf.grad for leaf in leaves]
        total += float(meta_loss.detach())
    generator.set_state(end_state)
    return total, carry.detach()


def _unroll(
    meta_params: MetaParams, config: MetaTrainConfig, task: Task, carry: Carry, generator: torch.Generator,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, Carry]:
    """`unroll` for as many steps as `weights` has, with the run's settings: the meta-loss and
    the carry after it."""
    meta_loss, carry, _ = unroll(
        meta_params, config.optimizer, task, carry, len(weights), generator,
        weights=weights, second_order=config.second_order, loss_clip=config.loss_clip,
        log_loss=config.meta_objective == "log_loss", compile=config.compile,
        matmul_dtype=config.matmul_dtype,
    )
    return meta_loss, carry


def _carried(carry: Carry, second_order: bool) -> list[torch.Tensor]:
    """The tensors of a carry that the meta-gradient flows through: the parameters and the
    LSTM's hidden and cell state, and with second-order meta-gradients also the optimizee's
    gradient and its moving averages (constants of the meta-graph otherwise)."""
    tensors = [carry.params, *carry.state.h, *carry.state.c]
    if second_order:
        tensors.append(carry.grads)
        if carry.state.momentum is not None:
            tensors.append(carry.state.momentum)
    return tensors


def _with_carried(carry: Carry, tensors: list[torch.Tensor], second_order: bool) -> Carry:
    """`carry` with the tensors of `_carried` replaced, in the same order."""
    layers = len(carry.state.h)
    h, c = tuple(tensors[1 : 1 + layers]), tuple(tensors[1 + layers : 1 + 2 * layers])
    grads, momentum = carry.grads, carry.state.momentum
    if second_order:
        grads = tensors[1 + 2 * layers]
        if momentum is not None:
            momentum = tensors[2 + 2 * layers]
    return carry._replace(params=tensors[0], grads=grads, state=LSTMState(h, c, momentum))


def train_trajectory(
    meta_params: MetaParams,
    meta_optimizer: torch.optim.Optimizer,
    config: MetaTrainConfig,
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
                _, carry = _unroll(meta_params, config, task, carry, generator, window)
            continue
        loss, carry = meta_gradient(meta_params, config, task, carry, generator, window)
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


def validate(meta_params: MetaParams, config: MetaTrainConfig, task: Task, group: Group = Group()) -> float:
    """Mean final loss of the learned optimizer on the fixed validation problems (in a group,
    `task` is this process's shard of them, and the mean is over all)."""
    losses = run_learned(meta_params, config.optimizer, task, config.horizon, config.validation_seed,
                         compile=config.compile).losses
    return group.average(tuning_score(losses[-1]), task.num_problems / config.validation_problems)


def starting_meta_params(config: MetaTrainConfig, generator: torch.Generator) -> MetaParams:
    """Random meta-parameters, or those of `config.init_from` (fine-tuning, curricula).

    The random ones are drawn either way, so that a run's training problems do not depend on
    where it starts. A starting optimizer must have this run's architecture.
    """
    meta_params = init_meta_params(config.optimizer, generator)
    if not config.init_from:
        return meta_params
    loaded, source = load_learned_optimizer(pretrained.resolve(config.init_from))
    ours, theirs = config.optimizer, source.optimizer
    if dataclasses.replace(theirs, output_init=ours.output_init, output_bias=ours.output_bias) != ours:
        raise UsageError(
            f"--init-from {config.init_from} is an optimizer of architecture {theirs}; this run's is "
            f"{ours}; give the run the same --layers, --hidden-size, --preprocessing, --preprocess-p, "
            "--output-scale, --update-form, --mix-scale, --mix-rms-decay, --momentum-inputs and "
            "--momentum-bias-correction"
        )
    return {name: tensor.detach().clone().to(meta_params[name].dtype) for name, tensor in loaded.items()}


def _fresh_state(config: MetaTrainConfig, validation_task: Task, group: Group) -> RunState:
    generator = torch.Generator().manual_seed(config.seed)
    device = torch.device(config.device)
    meta_params = {k: v.to(device).requires_grad_() for k, v in starting_meta_params(config, generator).items()}
    validation = validate(meta_params, config, validation_task, group)
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
    computes on `config.device`; the meta-parameters it returns and saves are on the CPU.

    With `config.workers` > 1, or in a process group that a launcher such as torchrun made,
    the processes split every trajectory's problems and average the meta-gradient
    (`meta.distributed`); process 0 alone writes to `run_dir` and shows progress, and every
    process returns the same result.
    """
    group = current_group()
    if config.workers > 1 and group.size == 1:
        return run_workers(_worker, (config, data_dir, resume), config.workers,
                           lambda: meta_train(config, run_dir, progress, data_dir, resume))
    check_size(group.size, config.problems, config.validation_problems)
    if not group.leader:
        run_dir, progress = None, False
    began = time.perf_counter()
    family = make_task_family(config.task, "train", data_dir, config.device)
    validation_task = group.shard(make_task_family(config.task, "heldout", data_dir, config.device).sample(
        config.validation_problems, torch.Generator().manual_seed(config.validation_seed)
    ))
    weights = loss_weights(config.loss_weights, config.horizon)
    state = state_from_checkpoint(config, resume) if resume else _fresh_state(config, validation_task, group)
    checksum = state.trajectory + sum(float(p.detach().double().sum()) for p in state.meta_params.values())
    if not group.same(checksum):
        raise Optimizer3Error(
            "The processes of this run start from different meta-parameters (different copies of the "
            "checkpoint on different machines?); give every process the same run directory"
        )
    history: list[dict[str, Any]] = list(state.validations[:1]) if not resume else []
    if run_dir and not resume:
        # A fresh run in a reused directory (--overwrite): the old run's checkpoint must not be
        # resumed or exported as this run's before this run saves its own.
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
    metrics = open_metrics(run_dir, state.trajectory) if run_dir else None
    bar = tqdm(range(state.trajectory, config.trajectories), desc="meta-train", disable=not progress,
               unit="traj", mininterval=1.0, initial=state.trajectory, total=config.trajectories)
    try:
        with stop_requests(run_dir is not None or group.size > 1) as requests:
            for _ in bar:
                record = _advance(config, state, family, weights, validation_task, group)
                done = state.trajectory
                record["seconds"] = time.perf_counter() - began
                history.append(record)
                if metrics:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                stopping = group.any(bool(requests))
                if run_dir and (done % config.checkpoint_every == 0 or done == config.trajectories or stopping):
                    save_state(config, state, run_dir)
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
        if metrics:
            metrics.close()
    return MetaTrainResult(
        best_meta_params=state.best_meta_params,
        best_validation=state.best_validation,
        meta_params=clone_params(state.meta_params),
        history=history,
        seconds=time.perf_counter() - began,
        skipped=state.skipped,
    )


def _worker(config: MetaTrainConfig, data_dir: str | None, resume: dict[str, Any] | None) -> None:
    """`meta_train` in a worker process that `config.workers` started: its share of the run."""
    try:
        meta_train(config, None, progress=False, data_dir=data_dir, resume=resume)
    except MetaTrainingInterrupted:
        pass  # process 0 saved the checkpoint and says so
    except Optimizer3Error:
        raise SystemExit(2) from None  # process 0 meets the same error and says so


def _advance(
    config: MetaTrainConfig, state: RunState, family, weights: torch.Tensor, validation_task: Task, group: Group
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
    record.update(train_trajectory(state.meta_params, state.meta_optimizer, config, task, state.generator, weights,
                                   group, state.average_params))
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
        record["validation_loss"] = validate(validated, config, validation_task, group)
        state.validations.append({"trajectory": done, "validation_loss": record["validation_loss"]})
        if record["validation_loss"] < state.best_validation:
            state.best_validation = record["validation_loss"]
            state.best_meta_params = clone_params(validated)
    return record
