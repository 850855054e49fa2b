"""Checkpoints: one plain dict of tensors and primitives, written atomically.

Loading never unpickles arbitrary objects (`torch.load(weights_only=True)`) and checks the
format version, the keys and every meta-parameter's shape against the stored architecture.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
from typing import Any

import torch

from optimizer3.config import MetaTrainConfig, from_dict, to_dict
from optimizer3.errors import CheckpointError, UsageError
from optimizer3.files import atomic_path
from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams, meta_param_shapes

FORMAT_VERSION = 1
REQUIRED_KEYS = ("version", "config", "meta_params", "best_meta_params", "meta_opt_state",
                 "trajectory", "best_validation", "rng")
# Keys added after the first checkpoints were written, with the value an old file implies.
OPTIONAL_KEYS = {"validations": list, "skipped": int, "consecutive_skips": int, "average_params": dict}


def atomic_save(obj: Any, path: pathlib.Path) -> None:
    """torch.save `obj` to `path` through a temporary file, so a crash leaves the old one."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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
    return _validate_checkpoint(_read_plain_dict(path), path)


def _validate_checkpoint(checkpoint: dict[str, Any], path: pathlib.Path) -> dict[str, Any]:
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"Checkpoint {path} lacks {', '.join(missing)}; is it an optimizer3 checkpoint?")
    if checkpoint["version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format version {checkpoint['version']!r}; this optimizer3 "
            f"reads version {FORMAT_VERSION}"
        )
    try:
        config = from_dict(MetaTrainConfig, checkpoint["config"])
    except UsageError as error:
        raise CheckpointError(f"Checkpoint {path} has an invalid config: {error}") from None
    for key in ("meta_params", "best_meta_params"):
        check_meta_params(checkpoint[key], config.optimizer, f"{path} ({key})")
    checkpoint["config"] = config
    _check_fields(checkpoint, path)
    if config.average_decay:
        check_meta_params(checkpoint["average_params"], config.optimizer, f"{path} (average_params)")
    return checkpoint


def _read_plain_dict(path: pathlib.Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of `path`, refusing anything but a plain dict."""
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}; pass the checkpoint.pt of a meta-train run or a "
            "learned-optimizer file"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        # Not torch's own message: it suggests loading with weights_only=False, which would
        # run whatever code the file names.
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = (f"it holds a Python object, {match.group(1)}, and objects are never unpickled" if match
                  else f"not a torch file of tensors and plain containers, or truncated or corrupt "
                       f"({type(error).__name__})")
        raise CheckpointError(
            f"Cannot read checkpoint {path}: not a plain-dict optimizer3 checkpoint: {reason}"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(data).__name__}, not a dict")
    return data


def check_meta_params(meta_params: Any, config: LSTMOptimizerConfig, where: str) -> None:
    """Raise `CheckpointError` unless `meta_params` fit the architecture `config` exactly."""
    expected = meta_param_shapes(config)
    if not isinstance(meta_params, dict) or set(meta_params) != set(expected):
        names = sorted(meta_params) if isinstance(meta_params, dict) else type(meta_params).__name__
        raise CheckpointError(
            f"Meta-parameters in {where} do not match the architecture {config}: got {names}"
        )
    for name, shape in expected.items():
        tensor = meta_params[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(
                f"Meta-parameter {name} in {where} has shape {got}, expected {shape}: "
                "the checkpoint is for another architecture"
            )
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise CheckpointError(f"Meta-parameter {name} in {where} is not finite floating point")


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


# A learned-optimizer file: just what applying the optimizer needs, plus what trained it. This
# is the format of the pretrained optimizers shipped in the package (`optimizer3 export`).
OPTIMIZER_FILE_KIND = "optimizer3.learned_optimizer"
OPTIMIZER_FILE_VERSION = 1


def make_optimizer_file(config: MetaTrainConfig, meta_params: MetaParams) -> dict[str, Any]:
    """The plain dict of a learned-optimizer file: architecture, weights, training config."""
    return {
        "kind": OPTIMIZER_FILE_KIND,
        "version": OPTIMIZER_FILE_VERSION,
        "meta_train": to_dict(config),
        "meta_params": {k: v.detach().clone().contiguous() for k, v in meta_params.items()},
    }


def load_learned_optimizer(path: str | os.PathLike[str]) -> tuple[MetaParams, MetaTrainConfig]:
    """Meta-parameters and training config from a learned-optimizer file or a training checkpoint.

    From a checkpoint, the best meta-parameters by validation loss are returned. Either file
    is read with `torch.load(weights_only=True)`: nothing in it is ever unpickled as code.
    """
    path = pathlib.Path(path)
    data = _read_plain_dict(path)
    if data.get("kind") != OPTIMIZER_FILE_KIND:
        checkpoint = _validate_checkpoint(data, path)
        return checkpoint["best_meta_params"], checkpoint["config"]
    if data.get("version") != OPTIMIZER_FILE_VERSION:
        raise CheckpointError(
            f"Learned-optimizer file {path} has format version {data.get('version')!r}; this "
            f"optimizer3 reads version {OPTIMIZER_FILE_VERSION}"
        )
    try:
        config = from_dict(MetaTrainConfig, data.get("meta_train"))
    except UsageError as error:
        raise CheckpointError(f"Learned-optimizer file {path} has an invalid config: {error}") from None
    check_meta_params(data.get("meta_params"), config.optimizer, str(path))
    return data["meta_params"], config


def meta_params_digest(meta_params: MetaParams) -> str:
    """SHA-256 of the meta-parameters' names, shapes, dtypes and values: which optimizer it is."""
    digest = hashlib.sha256()
    for name in sorted(meta_params):
        tensor = meta_params[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
