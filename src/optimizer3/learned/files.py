"""Learned-optimizer files: the meta-parameters and architecture of a trained optimizer.

A learned-optimizer file is one plain dict, read with `torch.load(weights_only=True)` so that
nothing in it is ever unpickled as code:

    {"kind": "optimizer3.learned_optimizer", "version": 2, "architecture": "lstm",
     "optimizer": {...the architecture's config...}, "meta_params": {name: tensor},
     "meta_train": {...the experiment that trained it, or None...},
     "recipe": [{"meta_train": {...}, "run": {...command, code version, machine, date...},
                 "seconds": ...}, ...]}

The recipe lists every meta-training stage that made the optimizer, first to last, each
starting from the one before (`init_from`); the last is `meta_train`.

It is the format of the shipped pretrained optimizers and of `optimizer3 export`. A
meta-training checkpoint (`meta.checkpoint`) holds an optimizer too, its best meta-parameters
by validation loss; `load_learned_optimizer` reads either.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
from typing import Any, NamedTuple

import torch

from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import CheckpointError, UsageError
from optimizer3.learned import lstm, mlp
from optimizer3.learned.lstm import LSTMOptimizerConfig, MetaParams
from optimizer3.learned.mlp import MLPOptimizerConfig

KIND = "optimizer3.learned_optimizer"
VERSION = 2
# Each architecture: its config class and the shapes of its meta-parameters.
ARCHITECTURES = {"lstm": (LSTMOptimizerConfig, lstm.meta_param_shapes),
                 "mlp": (MLPOptimizerConfig, mlp.meta_param_shapes)}
OptimizerConfig = LSTMOptimizerConfig | MLPOptimizerConfig
# The meta-training checkpoint versions this module reads the optimizer of (`meta.checkpoint`).
CHECKPOINT_VERSIONS = (1, 2)
# Version 1 files and checkpoints kept how a run computed inside its experiment config.
V1_RUNTIME_FIELDS = ("compile", "matmul_dtype", "device", "workers", "recompute_every")


class LearnedOptimizerFile(NamedTuple):
    """What a learned-optimizer file or checkpoint holds: the weights, the architecture, the
    experiment config that trained them as a plain dict (None if not recorded), and the stages
    that made them (empty where not recorded)."""

    meta_params: MetaParams
    config: OptimizerConfig
    meta_train: dict[str, Any] | None
    recipe: tuple[dict[str, Any], ...] = ()


def read_plain_dict(path: pathlib.Path) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of `path`, refusing anything but a plain dict."""
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint not found: {path}; pass the checkpoint.pt of a meta-train run or a "
            "learned-optimizer file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        # Not torch's own message: it suggests loading with weights_only=False, which would
        # run whatever code the file names.
        match = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        reason = (f"it holds a Python object, {match.group(1)}, and objects are never unpickled" if match
                  else f"not a torch file of tensors and plain containers, or truncated or corrupt "
                       f"({type(error).__name__})")
        raise CheckpointError(f"Cannot read checkpoint {path}: not a plain-dict optimizer3 checkpoint: "
                              f"{reason}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(data).__name__}, not a dict")
    return data


def architecture_name(config: OptimizerConfig) -> str:
    """The name under which files record the architecture of `config` ("lstm" or "mlp")."""
    for name, (cls, _) in ARCHITECTURES.items():
        if isinstance(config, cls):
            return name
    raise TypeError(f"Not a learned-optimizer architecture: {type(config).__name__}")


def check_meta_params(meta_params: Any, config: OptimizerConfig, where: str) -> None:
    """Raise `CheckpointError` unless `meta_params` fit the architecture `config` exactly."""
    expected = ARCHITECTURES[architecture_name(config)][1](config)
    if not isinstance(meta_params, dict) or set(meta_params) != set(expected):
        names = sorted(meta_params) if isinstance(meta_params, dict) else type(meta_params).__name__
        raise CheckpointError(f"Meta-parameters in {where} do not match the architecture {config}: got {names}")
    for name, shape in expected.items():
        tensor = meta_params[name]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CheckpointError(f"Meta-parameter {name} in {where} has shape {got}, expected {shape}: "
                                  "the checkpoint is for another architecture")
        if not tensor.is_floating_point() or not torch.isfinite(tensor).all():
            raise CheckpointError(f"Meta-parameter {name} in {where} is not finite floating point")


def drop_runtime_fields(data: Any) -> Any:
    """A version 1 config (a dict: meta-training or evaluation) without the runtime fields it
    kept; other values unchanged."""
    if isinstance(data, dict):
        return {key: value for key, value in data.items() if key not in V1_RUNTIME_FIELDS}
    return data


def make_optimizer_file(
    config: OptimizerConfig, meta_params: MetaParams, meta_train: dict[str, Any] | None,
    recipe: list[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The plain dict of a learned-optimizer file."""
    return {
        "kind": KIND,
        "version": VERSION,
        "architecture": architecture_name(config),
        "optimizer": to_dict(config),
        "meta_params": {k: v.detach().clone().contiguous().cpu() for k, v in meta_params.items()},
        "meta_train": meta_train,
        "recipe": list(recipe),
    }


def _architecture(data: Any, path: pathlib.Path, what: str, name: str = "lstm") -> OptimizerConfig:
    try:
        return from_dict(ARCHITECTURES[name][0], data)
    except UsageError as error:
        raise CheckpointError(f"{what} {path} has an invalid architecture: {error}") from None


def load_learned_optimizer(path: str | os.PathLike[str]) -> LearnedOptimizerFile:
    """The optimizer in a learned-optimizer file or a meta-training checkpoint (its best
    meta-parameters by validation loss), checked against its architecture."""
    path = pathlib.Path(path)
    data = read_plain_dict(path)
    if data.get("kind") != KIND:  # a training checkpoint
        if not isinstance(data.get("config"), dict) or "best_meta_params" not in data:
            raise CheckpointError(f"{path} is neither a learned-optimizer file nor a meta-training "
                                  "checkpoint; pass one of those or a shipped name (list-pretrained)")
        if data.get("version") not in CHECKPOINT_VERSIONS:
            raise CheckpointError(f"Checkpoint {path} has format version {data.get('version')!r}; this "
                                  f"optimizer3 reads versions {' and '.join(map(str, CHECKPOINT_VERSIONS))}")
        meta_train = drop_runtime_fields(data["config"])
        name = data.get("architecture", "lstm")
        if name not in ARCHITECTURES:
            raise CheckpointError(f"Checkpoint {path} is of architecture {name!r}; this optimizer3 knows "
                                  f"{', '.join(ARCHITECTURES)}")
        config = _architecture(meta_train.get("optimizer", {}), path, "Checkpoint", name)
        for key in ("meta_params", "best_meta_params"):
            check_meta_params(data.get(key), config, f"{path} ({key})")
        return LearnedOptimizerFile(data["best_meta_params"], config, meta_train)
    version = data.get("version")
    if version not in (1, VERSION):
        raise CheckpointError(f"Learned-optimizer file {path} has format version {version!r}; this "
                              f"optimizer3 reads versions 1 and {VERSION}")
    if version == 1:  # the architecture lived inside the training config
        meta_train = drop_runtime_fields(data.get("meta_train"))
        architecture = meta_train.get("optimizer", {}) if isinstance(meta_train, dict) else None
    else:
        meta_train, architecture = data.get("meta_train"), data.get("optimizer")
        if data.get("architecture") not in ARCHITECTURES:
            raise CheckpointError(f"Learned-optimizer file {path} is of architecture "
                                  f"{data.get('architecture')!r}; this optimizer3 knows {', '.join(ARCHITECTURES)}")
    config = _architecture(architecture, path, "Learned-optimizer file", data.get("architecture", "lstm"))
    check_meta_params(data.get("meta_params"), config, str(path))
    recipe = data.get("recipe", [])
    if not isinstance(recipe, list) or not all(isinstance(stage, dict) and "meta_train" in stage for stage in recipe):
        raise CheckpointError(f"Learned-optimizer file {path} has a malformed recipe; re-export it")
    return LearnedOptimizerFile(data["meta_params"], config, meta_train, tuple(recipe))


def meta_params_digest(meta_params: MetaParams) -> str:
    """SHA-256 of the meta-parameters' names, shapes, dtypes and values: which optimizer it is."""
    digest = hashlib.sha256()
    for name in sorted(meta_params):
        tensor = meta_params[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
