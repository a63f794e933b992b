"""Custom hyperparameters, declared and typed in the job spec, delivered to user code.

jobgen passes each declared hyperparameter as ``--<name>=<value>`` and, in the environment
variable ``JOBGEN_HYPERPARAMETERS``, as JSON ``{"<name>": {"type": "int|float|str|bool", "value": …}}``
(the value already checked against the spec's type, bounds and choices). A script reads them into
its own dataclass::

    @dataclasses.dataclass
    class Params:
        lr: float = 0.1
        width: int = 64
        augment: bool = True

    params = hparams.load(Params)          # env JSON, then --name=value flags override it

Types are enforced: a value that does not convert to the field's type is an error (exit 2) naming
the hyperparameter; an undeclared ``--flag`` is an error too. No torch import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from trainer.gcs import TrainerError

ENV = "JOBGEN_HYPERPARAMETERS"
T = TypeVar("T")
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def declared(env: Mapping[str, str] | None = None) -> dict[str, tuple[str, Any]]:
    """name → (type, value) from ``JOBGEN_HYPERPARAMETERS`` (empty when unset)."""
    raw = (os.environ if env is None else env).get(ENV, "")
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
        out = {str(k): (str(v["type"]), v["value"]) for k, v in doc.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise TrainerError(f"{ENV} is not valid JSON of {{name: {{type, value}}}}: {exc}") from None
    for name, (kind, _) in out.items():
        if kind not in _TYPES:
            raise TrainerError(f"{ENV}: hyperparameter {name!r} has unknown type {kind!r}")
    return out


def convert(name: str, kind: type, value: Any) -> Any:
    """``value`` (JSON or a command-line string) as ``kind``; TrainerError naming ``name`` if it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise TrainerError(f"hyperparameter {name}: expected a bool (true/false), got {value!r}")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TrainerError(f"hyperparameter {name}: expected an int, got {value!r}")
        try:
            return int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
        except ValueError:
            raise TrainerError(f"hyperparameter {name}: expected an int, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise TrainerError(f"hyperparameter {name}: expected a float, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise TrainerError(f"hyperparameter {name}: expected a float, got {value!r}") from None
    if kind is str:
        return str(value)
    raise TrainerError(f"hyperparameter {name}: unsupported field type {kind!r} (use int, float, str or bool)")


def split_flags(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``--name=value`` / ``--name value`` flags → {name: value} (dashes → underscores), and the rest."""
    flags: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                    raise TrainerError(f"hyperparameter --{name} has no value")
                value, i = argv[i + 1], i + 1
            flags[name.replace("-", "_")] = value
        else:
            rest.append(a)
        i += 1
    return flags, rest


def load(cls: type[T], argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> T:
    """An instance of the dataclass ``cls`` from ``JOBGEN_HYPERPARAMETERS`` and ``--name=value`` flags."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for name, (_kind, value) in declared(env).items():
        key = name.replace("-", "_")
        if key not in fields:
            raise TrainerError(
                f"the job spec declares hyperparameter {name!r}, which {cls.__name__} does not "
                f"have (fields: {', '.join(fields)})"
            )
        values[key] = convert(name, fields[key], value)
    flags, rest = split_flags(list(sys.argv[1:] if argv is None else argv))
    if rest:
        raise TrainerError(f"unexpected arguments: {' '.join(rest)}")
    for key, value in flags.items():
        if key not in fields:
            raise TrainerError(
                f"unknown hyperparameter --{key.replace('_', '-')} (known: "
                f"{', '.join('--' + f.replace('_', '-') for f in fields)})"
            )
        values[key] = convert(key, fields[key], value)
    return cls(**values)
