"""Command-line flags generated from the config dataclasses, and config files.

Every field of a config dataclass becomes a flag named after it (or its metadata "flag"), with
its metadata "help" and "choices"; a flag left out keeps the preset's value. Each config's flags
form one group of `--help`, under a title for users.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import typing
from typing import Any

from optimizer3.configs import from_dict, to_dict
from optimizer3.errors import UsageError
from optimizer3.evaluation.config import EvaluationConfig
from optimizer3.learned.files import V1_RUNTIME_FIELDS, drop_runtime_fields
from optimizer3.learned.lstm import LSTMOptimizerConfig
from optimizer3.meta.config import MetaTrainConfig
from optimizer3.runtime import RuntimeConfig
from optimizer3.tasks import TaskConfig


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that names the problem and this (sub)command's
    help, then exit status 2; and no abbreviated flags (`--hidden` is not `--hidden-size`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def flag_name(field: dataclasses.Field) -> str:
    return "--" + field.metadata.get("flag", field.name).replace("_", "-")


def add_config_arguments(
    parser: argparse.ArgumentParser, cls: type, defaults: Any, title: str,
    only: tuple[str, ...] | None = None, default_text: str | None = None,
) -> None:
    """One flag per field of the dataclass `cls` (nested dataclasses are flattened into the
    same group), under the help group `title`.

    `defaults`: the config whose values `--help` shows as the defaults, or None with
    `default_text` saying where the defaults come from (a checkpoint, a recipe). `only`: the
    fields that this command takes (all by default).
    """
    group = parser.add_argument_group(title)
    _add_fields(group, cls, defaults, only, default_text)


def _add_fields(group, cls: type, defaults: Any, only, default_text: str | None) -> None:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        default = None if defaults is None else getattr(defaults, field.name)
        if dataclasses.is_dataclass(hint):
            _add_fields(group, hint, default, only, default_text)
            continue
        if only is not None and field.name not in only:
            continue
        shown = default_text if defaults is None else (" ".join(map(str, default)) if isinstance(default, tuple) else default)
        kwargs: dict[str, Any] = {"dest": field.name, "default": None}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(hint) is tuple:
            element = field.metadata.get("type", str)
            kwargs.update(nargs="+", type=element, metavar=element.__name__.upper())
        else:
            kwargs.update(type=hint, metavar=hint.__name__.upper())
            if "choices" in field.metadata:
                kwargs.update(choices=field.metadata["choices"], metavar=None)
        help_text = field.metadata.get("help", "").replace("%", "%%")
        group.add_argument(flag_name(field), help=f"{help_text} (default: {shown})", **kwargs)


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


def given_flags(args: argparse.Namespace, cls: type) -> list[str]:
    """The flags of `cls`'s fields that the command line gave."""
    hints = typing.get_type_hints(cls)
    flags = []
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            flags += given_flags(args, hints[field.name])
        elif getattr(args, field.name, None) is not None:
            flags.append(flag_name(field))
    return flags


CONFIG_SECTIONS = ("meta_train", "evaluation")


def load_config_file(path: str | None, sections: dict[str, tuple[type, Any]]) -> dict[str, Any]:
    """Settings from a JSON file shaped like a run's config.json (sections "meta_train" and
    "evaluation"): each of `sections` (name -> (config class, preset)) as the file gives it,
    or its preset where the file is silent; a section the command does not take is ignored."""
    if path is None:
        return {key: preset for key, (_, preset) in sections.items()}
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"Cannot read config file {path}: {error}") from None
    if not isinstance(data, dict) or set(data) - set(CONFIG_SECTIONS):
        raise UsageError(f"Config file {path} must be a JSON object with keys {' and/or '.join(CONFIG_SECTIONS)}, "
                         "like the config.json of a run")
    try:
        return {key: from_dict(cls, _without_runtime(data[key], path)) if key in data else preset
                for key, (cls, preset) in sections.items()}
    except UsageError as error:
        raise UsageError(f"Config file {path}: {error}") from None


def _without_runtime(section: Any, path: str) -> Any:
    """A config file's section without the runtime fields that the config.json of runs before
    2026-12-05 kept; one that asks for anything but the default is refused, since a file no
    longer sets how a command computes."""
    if not isinstance(section, dict):
        return section
    defaults = to_dict(RuntimeConfig())
    for name in V1_RUNTIME_FIELDS:
        if name in section and section[name] != defaults[name]:
            raise UsageError(f"Config file {path} sets {name} = {section[name]!r}, how a command computes, which "
                             f"files no longer hold; remove it and pass --{name.replace('_', '-')} on the command line")
    return drop_runtime_fields(section)


def add_common(parser: argparse.ArgumentParser, run_dir_help: str | None, run_dir_required: bool = False) -> None:
    """--run-dir (with `run_dir_help`, unless None) and --overwrite, --quiet, --data-dir."""
    if run_dir_help:
        parser.add_argument("--run-dir", help=run_dir_help, required=run_dir_required)
        parser.add_argument("--overwrite", action="store_true", help="write into a run directory that holds files")
    parser.add_argument("--quiet", action="store_true", help="print only the result: no settings, no progress")
    parser.add_argument("--data-dir", default=None, help="where to look for data (MNIST, Fashion-MNIST, the text corpus) first; then "
                        "$OPTIMIZER3_DATA_DIR, then the user's cache directory, then download")


QUADRATIC_TASK_FIELDS = ("dim",)
MNIST_TASK_FIELDS = ("hidden", "mix_hidden", "activation", "batch_size", "init_scale")


def add_experiment_flags(
    parser, meta: MetaTrainConfig | None, evaluation: EvaluationConfig | None, text: str | None = None,
    task_fields: tuple[str, ...] | None = None,
) -> None:
    """The task (`task_fields` of it, all by default), architecture and meta-training flags,
    with `meta`'s values as the defaults shown (None: `text` says where the defaults come
    from); the evaluation's, if given."""
    default = (lambda part: getattr(meta, part)) if meta is not None else (lambda part: None)
    add_config_arguments(parser, TaskConfig, default("task"), "task", only=task_fields, default_text=text)
    add_config_arguments(parser, LSTMOptimizerConfig, default("optimizer"), "learned-optimizer architecture",
                         default_text=text)
    add_config_arguments(parser, MetaTrainConfig, meta, "meta-training", default_text=text,
                         only=tuple(f.name for f in dataclasses.fields(MetaTrainConfig) if f.name not in ("task", "optimizer")))
    if evaluation is not None:
        add_config_arguments(parser, EvaluationConfig, evaluation, "evaluation")


def add_config_file(parser: argparse.ArgumentParser) -> None:
    """--config: a run's config.json as the preset that flags override."""
    parser.add_argument("--config", metavar="JSON", help="start from the settings in this file (a run's "
                        "config.json); flags given here override it")
