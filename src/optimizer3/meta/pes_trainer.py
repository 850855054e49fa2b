"""PES meta-training of the per-parameter MLP optimizer on a mix of tasks.

The run is a sequence of chains. Each chain draws a task of the benchmark's meta-training set
(`PESTrainConfig.tasks`, on its meta-training data), one problem per antithetic pair, a random
reparameterization and loss scale of each problem (`tasks.augment`), and a horizon between
`min_horizon` and `max_horizon` steps (log-uniform); it then runs truncation after truncation
of `meta.pes`, one meta-update (Adam on the estimate) each, until its horizon. Every
`validate_every` meta-updates the optimizer (unperturbed) trains fixed validation problems of
every task in the mix on their held-out data; the score is the mean over tasks of the log of
the mean final loss, and the best meta-parameters by it are what the run delivers.

A checkpoint is written after every chain (atomically, and also when SIGINT or SIGTERM
arrives, which ends the run after the current chain), and `pes_meta_train(..., resume=...)`
continues bit for bit as if never stopped: everything random is drawn from one generator whose
state is saved. A truncation without a finite estimate (every pair's loss or parameters
non-finite) is skipped and counted, as is the rest of its chain; `max_skips` in a row stop the
run. With `runtime.workers` > 1, the processes split every chain's pairs and sum their
estimates before each meta-update (`meta.distributed`).

References: Vicol et al. 2021 (PES); Moudgil et al. 2025 and 2026 (Celo, Celo2: PES on a task
mix with augmentation).
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

from optimizer3.configs import to_dict
from optimizer3.errors import Optimizer3Error
from optimizer3.files import atomic_save
from optimizer3.learned.mlp import MetaParams, init_meta_params, meta_param_shapes
from optimizer3.meta import pes
from optimizer3.meta.checkpoint import on_cpu
from optimizer3.meta.config import PESTrainConfig
from optimizer3.meta.distributed import Group, current_group, rows, run_workers
from optimizer3.meta.run_state import open_metrics, stop_requests
from optimizer3.meta.trainer import MetaTrainResult, MetaTrainingDiverged, MetaTrainingInterrupted, as_worker
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks.augment import augment
from optimizer3.tasks.suite import SUITE

CHECKPOINT_VERSION = 2  # the version `learned.files` reads the best optimizer of
ESTIMATOR = "pes"


@dataclasses.dataclass
class PESRunState:
    """Everything a PES run is between chains (what a checkpoint holds)."""

    theta: torch.Tensor  # the meta-parameters as one vector (`pes.flatten`), a leaf for Adam
    meta_optimizer: torch.optim.Optimizer
    generator: torch.Generator
    meta_step: int = 0
    chains: int = 0
    best_theta: torch.Tensor | None = None
    best_validation: float = math.inf
    validations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped: int = 0
    consecutive_skips: int = 0
    seconds: float = 0.0  # meta-training time of every process run so far, up to the last chain


def scheduled_lr(config: PESTrainConfig, meta_step: int) -> float:
    """Cosine decay from `meta_lr` to a tenth of it over the run's meta-updates."""
    progress = min(meta_step / config.meta_steps, 1.0)
    return config.meta_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def validation_tasks(config: PESTrainConfig, data_dir, device: str) -> dict[str, Any]:
    """The fixed validation problems of every task in the mix, on its held-out data."""
    tasks = {}
    for name in config.tasks:
        problems = config.validation_problems * (8 if SUITE[name].family == "quadratic" else 1)
        family = SUITE[name].family_of(data_dir, device, "heldout")
        tasks[name] = family.sample(problems, torch.Generator().manual_seed(config.validation_seed))
    return tasks


def validate(meta_params: MetaParams, config: PESTrainConfig, tasks: dict[str, Any]) -> tuple[float, dict[str, float]]:
    """Mean over tasks of log(mean final loss), and each task's mean final loss (a diverged
    problem counts as an infinite loss)."""
    losses = {}
    for name, task in tasks.items():
        final = pes.evaluate(meta_params, task, config.validation_steps, config.validation_seed, config.optimizer)
        losses[name] = float(torch.nan_to_num(final.double(), nan=math.inf).mean())
    score = sum(math.log(value) if value > 0 else -math.inf for value in losses.values()) / len(losses)
    return score, losses


def make_checkpoint(config: PESTrainConfig, state: PESRunState, like: MetaParams) -> dict[str, Any]:
    """The checkpoint: a plain dict that `learned.files.load_learned_optimizer` also reads (its
    best meta-parameters)."""
    return {
        "version": CHECKPOINT_VERSION, "architecture": "mlp", "estimator": ESTIMATOR, "config": to_dict(config),
        "meta_params": on_cpu(pes.unflatten(state.theta.detach(), like)),
        "best_meta_params": on_cpu(pes.unflatten(state.best_theta, like)),
        "meta_opt_state": on_cpu(state.meta_optimizer.state_dict()), "rng": state.generator.get_state(),
        "meta_step": state.meta_step, "chains": state.chains, "best_validation": state.best_validation,
        "validations": list(state.validations), "skipped": state.skipped,
        "consecutive_skips": state.consecutive_skips, "seconds": state.seconds,
    }


def state_from_checkpoint(config: PESTrainConfig, checkpoint: dict[str, Any]) -> PESRunState:
    """The run state a PES checkpoint holds, checked against `config`."""
    if checkpoint.get("estimator") != ESTIMATOR or checkpoint.get("config") != to_dict(config):
        raise Optimizer3Error("The checkpoint is not of this PES run (another estimator or other settings); "
                              "resume it with its own settings, or start a new run in another directory")
    theta = pes.flatten(checkpoint["meta_params"]).clone().requires_grad_()
    meta_optimizer = torch.optim.Adam([theta], lr=config.meta_lr)
    meta_optimizer.load_state_dict(checkpoint["meta_opt_state"])
    generator = torch.Generator()
    generator.set_state(checkpoint["rng"])
    return PESRunState(theta, meta_optimizer, generator, checkpoint["meta_step"], checkpoint["chains"],
                       pes.flatten(checkpoint["best_meta_params"]).clone(), checkpoint["best_validation"],
                       list(checkpoint["validations"]), checkpoint["skipped"], checkpoint["consecutive_skips"],
                       checkpoint.get("seconds", 0.0))


def fresh_state(config: PESTrainConfig) -> PESRunState:
    generator = torch.Generator().manual_seed(config.seed)
    theta = pes.flatten(init_meta_params(config.optimizer, generator)).requires_grad_()
    return PESRunState(theta, torch.optim.Adam([theta], lr=config.meta_lr), generator,
                       best_theta=theta.detach().clone())


def horizon(config: PESTrainConfig, generator: torch.Generator) -> int:
    """A chain's length: log-uniform in [min_horizon, max_horizon], a multiple of the truncation."""
    low, high = math.log(config.min_horizon), math.log(config.max_horizon)
    steps = math.exp(low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64)))
    return max(config.truncation, int(steps) // config.truncation * config.truncation)


def run_chain(config: PESTrainConfig, state: PESRunState, families: dict[str, Any], like: MetaParams,
              group: Group, device: str) -> dict[str, Any]:
    """Draw one chain and meta-train on it to its end (or to the run's last meta-update);
    update `state` in place and return the chain's record."""
    generator = state.generator
    name = config.tasks[int(torch.randint(len(config.tasks), (), generator=generator))]
    task = augment(families[name].sample(config.pairs, generator), generator, config.parameter_decades,
                   config.loss_decades, device)
    length = horizon(config, generator)
    start, stop = rows(config.pairs, group.rank, group.size)
    local = group.shard(task)
    chain = pes.start_chain(local, config.optimizer, generator, state.theta.numel())
    losses, norms, skipped = [], [], 0
    for _ in range(length // config.truncation):
        if state.meta_step >= config.meta_steps:
            break
        perturbations = torch.randn(config.pairs, state.theta.numel(), generator=generator) * config.sigma
        estimate, chain = pes.pes_estimate(state.theta.detach(), perturbations[start:stop], like, local, chain,
                                           config.truncation, generator, config.optimizer, config.sigma,
                                           config.loss_floor)
        scalars = torch.tensor([estimate.squared_differences, estimate.count, estimate.meta_loss], dtype=torch.float64)
        summed = group.sum(torch.cat([estimate.total.double(), scalars]))
        squares, count, meta_loss = float(summed[-3]), int(summed[-2]), float(summed[-1])
        if count == 0:  # every pair non-finite: nothing to learn from the rest of this chain
            skipped = 1
            break
        gradient = summed[:-3] / count
        if config.normalize_differences and squares > 0:
            # Every truncation's differences at unit root mean square: the estimate's direction
            # is unchanged, and a task whose log-loss moves a lot (a quadratic converging by
            # decades) weighs no more in the meta-update than one whose loss moves little.
            gradient = gradient / math.sqrt(squares / count)
        state.theta.grad = gradient.to(state.theta.dtype)
        norm = float(torch.nn.utils.clip_grad_norm_([state.theta], config.clip_grad_norm or math.inf))
        if not math.isfinite(norm):
            skipped = 1
            break
        for param_group in state.meta_optimizer.param_groups:
            param_group["lr"] = scheduled_lr(config, state.meta_step)
        state.meta_optimizer.step()
        state.meta_step += 1
        losses.append(meta_loss / count)
        norms.append(norm)
    state.chains += 1
    state.skipped += skipped
    state.consecutive_skips = state.consecutive_skips + 1 if skipped else 0
    return {"chain": state.chains, "meta_step": state.meta_step, "task": name, "horizon": length,
            "meta_loss": sum(losses) / len(losses) if losses else None, "grad_norm": max(norms, default=None),
            "pairs_finite_at_end": int(group.sum(torch.tensor([float(chain.alive.sum())], dtype=torch.float64))),
            "skipped": skipped, "skipped_total": state.skipped}


def pes_meta_train(config: PESTrainConfig, runtime: RuntimeConfig = RuntimeConfig(), run_dir: pathlib.Path | None = None,
                   progress: bool = True, data_dir: str | None = None, resume: dict[str, Any] | None = None) -> MetaTrainResult:
    """Meta-train as `config` says, from scratch or from a loaded checkpoint (`resume`).

    With a `run_dir`, each chain's record goes to metrics.jsonl and the state to checkpoint.pt
    after each chain; SIGINT or SIGTERM ends the run after the current chain with a checkpoint
    and `MetaTrainingInterrupted`. With `runtime.workers` > 1 the processes split each chain's
    pairs; process 0 alone writes and shows progress. The result's `seconds` is the
    meta-training time of every process run of it, to its last chain.
    """
    group = current_group()
    if runtime.workers > 1 and group.size == 1:
        if runtime.workers > config.pairs:
            raise Optimizer3Error(f"Invalid workers: {runtime.workers} processes for {config.pairs} pairs; use at "
                                  "most one process per pair")
        return run_workers(_worker, (config, runtime, data_dir, resume), runtime.workers,
                           lambda: pes_meta_train(config, runtime, run_dir, progress, data_dir, resume))
    if not group.leader:
        run_dir, progress = None, False
    began = time.perf_counter()
    like = {name: torch.empty(shape) for name, shape in meta_param_shapes(config.optimizer).items()}
    families = {name: SUITE[name].family_of(data_dir, runtime.device, "train") for name in dict.fromkeys(config.tasks)}
    checks = validation_tasks(config, data_dir, runtime.device)
    state = state_from_checkpoint(config, resume) if resume else fresh_state(config)
    earlier = state.seconds  # this process run's time is added to that of the runs before it
    history: list[dict[str, Any]] = []
    if not resume:
        score, losses = validate(pes.unflatten(state.theta.detach(), like), config, checks)
        state.best_validation = score
        state.validations.append({"meta_step": 0, "validation": score, "losses": losses})
        history.append(dict(state.validations[0]))
    if not group.same(state.meta_step + float(state.theta.detach().double().sum())):
        raise Optimizer3Error("The processes of this run start from different meta-parameters; give every "
                              "process the same run directory")
    metrics = open_metrics(run_dir, state.chains, key="chain") if run_dir else None
    if metrics and not resume:
        metrics.write(json.dumps({"chain": 0, **history[0]}) + "\n")
    bar = tqdm(total=config.meta_steps, initial=state.meta_step, desc="meta-train (PES)", unit="meta-step",
               disable=not progress, mininterval=1.0)
    try:
        with stop_requests(run_dir is not None or group.size > 1) as requests:
            while state.meta_step < config.meta_steps:
                before = state.meta_step
                record = run_chain(config, state, families, like, group, runtime.device)
                if state.consecutive_skips >= config.max_skips:
                    raise MetaTrainingDiverged(
                        f"Meta-training diverged: {state.consecutive_skips} chains in a row ended without a finite "
                        f"estimate (meta-step {state.meta_step}); the last good checkpoint is kept; lower --meta-lr "
                        "or --sigma")
                due = (before // config.validate_every != state.meta_step // config.validate_every
                       or state.meta_step >= config.meta_steps)
                if due:
                    _validate_into(config, state, like, checks, record)
                state.seconds = earlier + time.perf_counter() - began
                record["seconds"] = round(state.seconds, 3)
                history.append(record)
                bar.update(state.meta_step - before)
                bar.set_postfix(task=record["task"], meta_loss=record["meta_loss"],
                                best=f"{state.best_validation:.3f}", skipped=state.skipped)
                stopping = group.any(bool(requests))
                if run_dir:
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    atomic_save(make_checkpoint(config, state, like), run_dir / "checkpoint.pt")
                if stopping:
                    saved = (f"checkpoint saved; continue with the same command" if run_dir else "no checkpoint here")
                    raise MetaTrainingInterrupted(
                        f"Interrupted after meta-step {state.meta_step} of {config.meta_steps}; {saved}")
    finally:
        bar.close()
        if metrics:
            metrics.close()
    return MetaTrainResult(pes.unflatten(state.best_theta, like), state.best_validation,
                     pes.unflatten(state.theta.detach().clone(), like), history, state.seconds,
                     state.skipped)


def _validate_into(config: PESTrainConfig, state: PESRunState, like: MetaParams, checks, record: dict) -> None:
    """Validate the current meta-parameters; keep them if they are the best so far."""
    score, losses = validate(pes.unflatten(state.theta.detach(), like), config, checks)
    record["validation"], record["validation_losses"] = score, losses
    state.validations.append({"meta_step": state.meta_step, "validation": score, "losses": losses})
    if score < state.best_validation:
        state.best_validation = score
        state.best_theta = state.theta.detach().clone()


def _worker(config: PESTrainConfig, runtime: RuntimeConfig, data_dir: str | None, resume: dict[str, Any] | None) -> None:
    """`pes_meta_train` in a worker process that `runtime.workers` started: its share of the run."""
    as_worker(lambda: pes_meta_train(config, runtime, None, progress=False, data_dir=data_dir, resume=resume))
