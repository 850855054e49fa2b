"""Typed, frozen configs and their round trip through plain dicts.

Every setting of the project is a field of a frozen dataclass; `field` attaches the text that
`--help` shows for its flag (`flags`). `to_dict` and `from_dict` carry a config into JSON files
and checkpoints and back, refusing unknown fields and values of the wrong type.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from optimizer3.errors import UsageError


def field(default: Any, help: str, **metadata: Any) -> Any:
    """A dataclass field with a default and the help text of its flag.

    Metadata understood by `flags`: "choices" (allowed values), "type" (the element type of a
    tuple field), "flag" (the flag's name when it is not the field's).
    """
    if isinstance(default, (list, dict, set)):
        raise TypeError("a mutable default needs dataclasses.field(default_factory=...)")
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """Refuse a value that is not among `choices`, naming them."""
    if value not in choices:
        raise UsageError(f"Invalid {name}: {value!r}; choose one of {', '.join(choices)}")


def check_positive(config: Any, *names: str) -> None:
    """Refuse any of the integer fields `names` of `config` that is below 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise UsageError(f"Invalid {name}: {value}; use a positive integer")


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as nested dicts of primitives (safe for JSON and checkpoints)."""
    return dataclasses.asdict(config)


def _check_type(name: str, value: Any, hint: type) -> None:
    # bool is an int in Python, and an int is a fine float; nothing else converts silently.
    ok = isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise UsageError(f"Invalid {name}: {value!r}; expected {hint.__name__}")


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from `to_dict` output, refusing unknown fields."""
    if not isinstance(data, dict):
        raise UsageError(f"Invalid {cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"Unknown {cls.__name__} field(s): {', '.join(unknown)}")
    values = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise UsageError(f"Invalid {name}: {value!r}; expected a list")
            item = typing.get_args(hint)[0]  # tuple[item, ...]
            for element in value:
                try:
                    _check_type(name, element, item)
                except UsageError:
                    raise UsageError(f"Invalid {name}: {value!r}; expected a list of {item.__name__}") from None
            value = tuple(value)
        elif hint in (int, float, str, bool):
            _check_type(name, value, hint)
        values[name] = value
    try:
        return cls(**values)
    except TypeError as error:
        raise UsageError(str(error)) from None
