"""Command-line flags generated from the config dataclasses, and config files.

Every field of a config dataclass becomes a flag named after it (or its metadata "flag"), with
its metadata "help" and "choices"; a flag left out keeps the preset's value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import typing
from typing import Any

from optimizer3.config import EvaluationConfig, MetaTrainConfig, from_dict
from optimizer3.errors import UsageError


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the problem, then exit status 2.

    It also remembers the flags that `add_config_arguments` made, so that a second config with
    a shared field can find the flag instead of adding it twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config_flags: dict[str, argparse.Action] = {}

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


SHARED_FLAGS = frozenset({"compile", "device", "workers"})


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.metadata.get("flag", field.name).replace("_", "-")


def add_config_arguments(parser: Parser, cls: type, defaults: Any) -> None:
    """One flag per field of the (nested) dataclass `cls`; defaults shown from `defaults`.

    A field in `SHARED_FLAGS` whose flag an earlier config made on this parser (`compile`,
    `device` and `workers` are in both the meta-training and the evaluation config) shares that
    flag: one `--compile` sets both. Any other field whose flag exists is a programming error.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for field in dataclasses.fields(cls):
        hint, default = hints[field.name], getattr(defaults, field.name)
        if dataclasses.is_dataclass(hint):
            add_config_arguments(parser, hint, default)
            continue
        name, help_text = flag_name(field), field.metadata.get("help", "").replace("%", "%%")
        shared = parser.config_flags.get(name)
        if shared is not None:
            if field.name not in SHARED_FLAGS:
                raise ValueError(f"{cls.__name__}.{field.name}: flag {name} exists already")
            # Where the two configs read the shared flag differently, its help says both.
            if help_text not in shared.help:
                shared.help += f"; for the {cls.__name__.removesuffix('Config').lower()}: {help_text}"
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "default": None}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            element = field.metadata.get("type", str)
            kwargs.update(nargs="+", type=element, metavar=element.__name__.upper())
            default = " ".join(map(str, default))
        else:
            kwargs["type"] = hint
            kwargs["metavar"] = hint.__name__.upper()
            if "choices" in field.metadata:
                kwargs.update(choices=field.metadata["choices"], metavar=None)
        parser.config_flags[name] = group.add_argument(name, help=f"{help_text} (default: {default})", **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, defaults: Any) -> Any:
    """`defaults` with every field that was given on the command line replaced."""
    hints = typing.get_type_hints(cls)
    changes = {}
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            changes[field.name] = config_from_args(hints[field.name], args, getattr(defaults, field.name))
        elif getattr(args, field.name, None) is not None:
            value = getattr(args, field.name)
            changes[field.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(defaults, **changes)


def load_config_file(path: str | None) -> tuple[MetaTrainConfig, EvaluationConfig]:
    """Settings from a JSON file shaped like a run's config.json; defaults where it is silent."""
    if path is None:
        return MetaTrainConfig(), EvaluationConfig()
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot read config file {path}: {error}") from None
    if not isinstance(data, dict) or set(data) - {"meta_train", "evaluation"}:
        raise UsageError(
            f"Config file {path} must be a JSON object with keys meta_train and/or evaluation, "
            "like the config.json of a run"
        )
    try:
        return (from_dict(MetaTrainConfig, data.get("meta_train", {})),
                from_dict(EvaluationConfig, data.get("evaluation", {})))
    except UsageError as error:
        raise UsageError(f"Config file {path}: {error}") from None


def given_config_flags(args: argparse.Namespace, cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    flags = []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            flags += given_config_flags(args, hints[field.name])
        elif getattr(args, field.name, None) is not None:
            flags.append(flag_name(field))
    return flags
