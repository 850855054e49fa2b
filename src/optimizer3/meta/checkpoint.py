"""Checkpoints: one plain dict of tensors and primitives, written atomically.

Loading never unpickles arbitrary objects (`torch.load(weights_only=True)`) and checks the
format version, the keys and every meta-parameter's shape against the stored architecture.
Version 1 checkpoints (whose config also held how the run computed) are read as version 2.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import torch

from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import CheckpointError, UsageError
from optimizer3.files import atomic_save
from optimizer3.learned.files import CHECKPOINT_VERSIONS, check_meta_params, drop_runtime_fields, read_plain_dict
from optimizer3.learned.lstm import MetaParams
from optimizer3.meta.config import MetaTrainConfig

FORMAT_VERSION = CHECKPOINT_VERSIONS[-1]
REQUIRED_KEYS = ("version", "config", "meta_params", "best_meta_params", "meta_opt_state",
                 "trajectory", "best_validation", "rng")
# Keys added after the first checkpoints were written, with the value an old file implies.
OPTIONAL_KEYS = {"validations": list, "skipped": int, "consecutive_skips": int, "average_params": dict}


def on_cpu(value: Any) -> Any:
    """`value` with every tensor in it (through dicts, lists and tuples) detached and copied to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(item) for item in value)
    return value


def make_checkpoint(
    config: MetaTrainConfig,
    meta_params: MetaParams,
    best_meta_params: MetaParams,
    meta_opt_state: dict[str, Any],
    trajectory: int,
    best_validation: float,
    rng: torch.Tensor,
    validations: list[dict[str, float]] | None = None,
    skipped: int = 0,
    consecutive_skips: int = 0,
    average_params: MetaParams | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (see `REQUIRED_KEYS` and `OPTIONAL_KEYS`); its tensors are CPU
    copies, whatever device trained them, so that any machine can load it."""
    return {
        "version": FORMAT_VERSION,
        "config": to_dict(config),
        "meta_params": on_cpu(meta_params),
        "best_meta_params": on_cpu(best_meta_params),
        "meta_opt_state": on_cpu(meta_opt_state),
        "trajectory": trajectory,
        "best_validation": best_validation,
        "rng": rng.clone(),
        "validations": list(validations or []),
        "skipped": skipped,
        "consecutive_skips": consecutive_skips,
        "average_params": on_cpu(average_params or {}),
    }


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a checkpoint; raise `CheckpointError` saying what is wrong."""
    path = pathlib.Path(path)
    return _validate_checkpoint(read_plain_dict(path), path)


def _validate_checkpoint(checkpoint: dict[str, Any], path: pathlib.Path) -> dict[str, Any]:
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"Checkpoint {path} lacks {', '.join(missing)}; is it an optimizer3 checkpoint?")
    if checkpoint["version"] not in CHECKPOINT_VERSIONS:
        raise CheckpointError(
            f"Checkpoint {path} has format version {checkpoint['version']!r}; this optimizer3 "
            f"reads versions 1 and {FORMAT_VERSION}"
        )
    try:
        config = from_dict(MetaTrainConfig, drop_runtime_fields(checkpoint["config"]))
    except UsageError as error:
        raise CheckpointError(f"Checkpoint {path} has an invalid config: {error}") from None
    for key in ("meta_params", "best_meta_params"):
        check_meta_params(checkpoint[key], config.optimizer, f"{path} ({key})")
    checkpoint["config"] = config
    _check_fields(checkpoint, path)
    if config.average_decay:
        check_meta_params(checkpoint["average_params"], config.optimizer, f"{path} (average_params)")
    return checkpoint


def _check_fields(checkpoint: dict[str, Any], path: pathlib.Path) -> None:
    """Types of the bookkeeping fields, and defaults for optional ones an older file lacks."""
    expected = {"trajectory": int, "best_validation": float, "rng": torch.Tensor, "meta_opt_state": dict}
    for key, kind in expected.items():
        if not isinstance(checkpoint[key], kind) or isinstance(checkpoint[key], bool):
            raise CheckpointError(f"Checkpoint {path} has a {type(checkpoint[key]).__name__} for {key}; expected {kind.__name__}")
    if checkpoint["trajectory"] < 0 or checkpoint["trajectory"] > checkpoint["config"].trajectories:
        raise CheckpointError(f"Checkpoint {path} is at trajectory {checkpoint['trajectory']}, outside its run")
    for key, kind in OPTIONAL_KEYS.items():
        checkpoint.setdefault(key, kind())
        if not isinstance(checkpoint[key], kind):
            raise CheckpointError(f"Checkpoint {path} has a {type(checkpoint[key]).__name__} for {key}; expected {kind.__name__}")
