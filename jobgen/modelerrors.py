"""pydantic ValidationErrors -> :class:`jobgen.errors.Problem` lines, for every jobgen model.

One translator for the job spec, the watcher config and the prediction spec: each problem names
the field path as the user wrote it (aliases, ``a.b[0].c``) and what was expected, and unknown
fields list the allowed ones.
"""

from __future__ import annotations

import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError

from jobgen.errors import FieldError, Problem, UserError, format_path

M = typing.TypeVar("M", bound=BaseModel)

# pydantic puts union/validator tags into error locations; they are not fields.
_TAG = re.compile(
    r"^(str|int|float|bool|none|list\[.*|dict\[.*|function-.*|constrained-.*|lax-or-strict.*|"
    r"json-or-python.*|literal\[.*|tagged-union.*|nullable.*|[A-Z][A-Za-z]+)$"
)


def unwrap(annotation: Any) -> list[Any]:
    """The alternatives of an Optional/Union/Annotated annotation."""
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) if arg is not type(None) for a in unwrap(arg)]
    if origin is typing.Annotated:
        return unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _field_by_alias(model: type[BaseModel], key: str) -> Any | None:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info.annotation
    return None


def step(annotation: Any, seg: str | int) -> Any | None:
    """The annotation one path segment below ``annotation`` (None: no such field)."""
    for cand in unwrap(annotation):
        origin = typing.get_origin(cand)
        if isinstance(cand, type) and issubclass(cand, BaseModel) and isinstance(seg, str):
            return _field_by_alias(cand, seg)
        if origin is dict and isinstance(seg, str):
            return typing.get_args(cand)[1]
        if origin is list and isinstance(seg, int):
            return typing.get_args(cand)[0]
    return None


def fields_at(model: type[BaseModel], path: list[str | int] | tuple[Any, ...]) -> list[str] | None:
    """The field names (aliases) allowed at ``path`` of ``model``, or None if free-form there."""
    annotation: Any = model
    for seg in path:
        annotation = step(annotation, seg)
        if annotation is None:
            return None
    models = [a for a in unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if not models:
        return None
    return [info.alias or name for name, info in models[0].model_fields.items()]


def _is_map(annotation: Any) -> bool:
    return any(typing.get_origin(a) is dict for a in unwrap(annotation))


def _user_loc(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str | int]:
    """``loc`` without pydantic's tags; keys of free-form mappings (replica types...) are kept."""
    out: list[str | int] = []
    annotation: Any = model
    for seg in loc:
        is_key = annotation is not None and _is_map(annotation)
        if isinstance(seg, int) or is_key or not _TAG.match(str(seg)):
            out.append(seg)
            annotation = step(annotation, seg) if annotation is not None else None
    return out


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _message(model: type[BaseModel], err: Any, loc: list[str | int]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = fields_at(model, loc[:-1])
        return "unknown field" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    msg: str = err["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    if kind.endswith("_type") or kind in ("literal_error", "enum"):
        return f"{_lower_first(msg)} (got {err.get('input')!r})"
    shown = "input" in err and not isinstance(err["input"], dict | list)
    return _lower_first(msg) + (f" (got {err['input']!r})" if shown else "")


def problems(model: type[BaseModel], exc: ValidationError) -> list[Problem]:
    """One Problem per field path (several messages for one path are joined with "or")."""
    merged: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            path, msg = format_path(cause.loc), str(cause)
        else:
            loc = _user_loc(model, tuple(err["loc"]))
            path, msg = format_path(loc), _message(model, err, loc)
        bucket = merged.setdefault(path, [])
        if msg not in bucket:
            bucket.append(msg)
    return [Problem(path, " or ".join(msgs)) for path, msgs in merged.items()]


def parse(model: type[M], doc: Any, source: str) -> M:
    """``model`` validated from ``doc``, or a UserError naming ``source`` and each field."""
    if not isinstance(doc, dict):
        raise UserError.one("", f"expected a YAML mapping at the top level, got {type(doc).__name__}", source)
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise UserError(problems(model, exc), source) from None
