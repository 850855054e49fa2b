"""The state of a meta-training run between trajectories, and how it is saved and resumed.

Everything a bit-identical continuation needs besides the config lives in `RunState`; the
checkpoint is that state as a plain dict (`meta/checkpoint.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
from collections.abc import Iterator
from typing import Any, TextIO

import torch

from optimizer3.errors import RunDirectoryError
from optimizer3.files import USER_ERRNOS, WriteError, write_text_atomic
from optimizer3.learned.lstm import MetaParams
from optimizer3.meta.checkpoint import atomic_save, make_checkpoint, on_cpu
from optimizer3.meta.config import MetaTrainConfig


@dataclasses.dataclass
class RunState:
    """Meta-parameters, meta-optimizer, generator and bookkeeping after `trajectory` trajectories."""

    meta_params: MetaParams
    meta_optimizer: torch.optim.Optimizer
    generator: torch.Generator
    trajectory: int
    best_meta_params: MetaParams
    best_validation: float
    validations: list[dict[str, float]]
    skipped: int = 0
    consecutive_skips: int = 0
    # With `config.average_decay`: the moving average of the meta-parameters (on their device),
    # which is what validation measures and early stopping keeps; None without.
    average_params: MetaParams | None = None

    def validated_params(self) -> MetaParams:
        """The meta-parameters that validation measures: the average, or the current ones."""
        return self.meta_params if self.average_params is None else self.average_params


def clone_params(params: MetaParams) -> MetaParams:
    """Detached CPU copies: a snapshot that later meta-steps do not change."""
    return on_cpu(params)


def start_average(meta_params: MetaParams, config: MetaTrainConfig) -> MetaParams | None:
    """The moving average of the meta-parameters at the start of a run (a copy of them), or
    None when `config.average_decay` is 0."""
    if not config.average_decay:
        return None
    return {name: tensor.detach().clone() for name, tensor in meta_params.items()}


def update_average(average: MetaParams | None, meta_params: MetaParams, decay: float) -> None:
    """One meta-step of the moving average: average <- decay * average + (1 - decay) * params."""
    if average is None:
        return
    with torch.no_grad():
        for name, tensor in meta_params.items():
            average[name].lerp_(tensor, 1.0 - decay)


def make_meta_optimizer(meta_params: MetaParams, config: MetaTrainConfig) -> torch.optim.Optimizer:
    """The meta-optimizer: Adam over the LSTM's weights."""
    return torch.optim.Adam(meta_params.values(), lr=config.meta_lr)


def state_from_checkpoint(config: MetaTrainConfig, checkpoint: dict[str, Any], device: str = "cpu") -> RunState:
    """The state a validated checkpoint (`load_checkpoint`) holds, ready to continue on `device`."""
    device = torch.device(device)
    meta_params = {k: v.to(device, copy=True).requires_grad_() for k, v in checkpoint["meta_params"].items()}
    meta_optimizer = make_meta_optimizer(meta_params, config)
    meta_optimizer.load_state_dict(checkpoint["meta_opt_state"])  # moves the state to the params' device
    generator = torch.Generator()
    generator.set_state(checkpoint["rng"])
    average = None
    if config.average_decay:
        average = {k: v.to(device, copy=True) for k, v in checkpoint["average_params"].items()}
    return RunState(
        meta_params=meta_params,
        meta_optimizer=meta_optimizer,
        generator=generator,
        trajectory=checkpoint["trajectory"],
        best_meta_params=clone_params(checkpoint["best_meta_params"]),
        best_validation=checkpoint["best_validation"],
        validations=list(checkpoint["validations"]),
        skipped=checkpoint["skipped"],
        consecutive_skips=checkpoint["consecutive_skips"],
        average_params=average,
    )


def save_state(config: MetaTrainConfig, state: RunState, run_dir: pathlib.Path) -> None:
    """Write `state` to run_dir/checkpoint.pt atomically."""
    checkpoint = make_checkpoint(
        config, state.meta_params, state.best_meta_params, state.meta_optimizer.state_dict(),
        state.trajectory, state.best_validation, state.generator.get_state(),
        state.validations, state.skipped, state.consecutive_skips, state.average_params,
    )
    atomic_save(checkpoint, run_dir / "checkpoint.pt")


@contextlib.contextmanager
def stop_requests(enabled: bool) -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into a request that the loop honours between trajectories."""
    requests: list[int] = []
    if not enabled:
        yield requests
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, frame: requests.append(number))
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def open_metrics(run_dir: pathlib.Path, trajectory: int, key: str = "trajectory") -> TextIO:
    """metrics.jsonl opened for appending, without records past `trajectory` (a resumed run
    repeats the trajectories after its checkpoint, so their old records are dropped; the file
    is rewritten atomically, so that a failure leaves it as it was). `key`: the records' field
    that counts (a PES run's is "chain")."""
    path = run_dir / "metrics.jsonl"
    if trajectory == 0 or not path.exists():
        return path.open("w")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # torn by a crash mid-write: a trajectory after the checkpoint, dropped anyway
            raise RunDirectoryError(
                f"{path} line {number} is not JSON; repair or delete that line to resume"
            ) from None
        if record.get(key, 0) <= trajectory:
            kept.append(line)
    write_text_atomic(path, "".join(line + "\n" for line in kept))
    return path.open("a")

class RunFiles:
    """A run directory's metrics.jsonl and checkpoint.pt, written as the run goes.

    A write that fails for lack of space or permission ends the run with a `WriteError` that
    says which checkpoint is kept and how to continue. A fresh run (not a resume) first removes
    an old run's checkpoint (--overwrite), so that it cannot be resumed or exported under the
    new run's record before the new run saves its own.
    """

    def __init__(self, run_dir: pathlib.Path, trajectory: int, fresh: bool) -> None:
        self.run_dir = run_dir
        if fresh:
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        self.saved = None if fresh else trajectory  # the trajectory of the checkpoint on disk
        self.metrics = open_metrics(run_dir, trajectory)

    def record(self, record: dict[str, Any]) -> None:
        try:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
        except OSError as error:
            if error.errno not in USER_ERRNOS:
                raise
            raise self._failed(f"Cannot write {self.run_dir / 'metrics.jsonl'}: {error.strerror or error}") from None

    def save(self, config: MetaTrainConfig, state: RunState) -> None:
        try:
            save_state(config, state, self.run_dir)
        except WriteError as error:
            raise self._failed(str(error)) from None
        self.saved = state.trajectory

    def close(self) -> None:
        self.metrics.close()

    def _failed(self, what: str) -> WriteError:
        if self.saved is None:
            return WriteError(f"{what}; no checkpoint of this run was saved yet: free space (or fix the "
                              "permissions) and start it again")
        return WriteError(f"{what}; the checkpoint of trajectory {self.saved} in {self.run_dir} is kept: free space "
                          f"(or fix the permissions) and continue with: optimizer3 meta-train --resume {self.run_dir}")
