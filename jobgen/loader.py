"""Reading spec and manifest files, applying ``--set``, and turning pydantic errors into user errors."""

from __future__ import annotations

import copy
import re
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from jobgen.errors import Problem, UserError
from jobgen.spec import JobSpec, SpecFieldError

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that rejects duplicate keys, as kubectl does since 1.27."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError.one(where, f"invalid YAML: {problem}", source) from None


def read_document(path: str | Path) -> dict[str, Any]:
    """Read one YAML mapping from ``path`` ('-' is stdin)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8") if source != "-" else _stdin()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UserError.one("", f"cannot read file: {reason}", source) from None
    doc = parse_yaml(text, source)
    if not isinstance(doc, dict):
        raise UserError.one("", f"expected a YAML mapping at the top level, got {type(doc).__name__}", source)
    return doc


def _stdin() -> str:
    import sys

    return sys.stdin.read()


def is_manifest(doc: dict[str, Any]) -> bool:
    return str(doc.get("apiVersion", "")).startswith("kubeflow.org/")


# --------------------------------------------------------------------------------------------
# --set path=value
# --------------------------------------------------------------------------------------------

_SEGMENT = re.compile(r"((?:\\.|[^.\[\]\\])+)|\[(\d+)\]")


def split_path(path: str) -> list[str | int]:
    """Split ``a.b[0].c\\.d`` into ``['a', 'b', 0, 'c.d']`` (helm's --set syntax)."""
    segments: list[str | int] = []
    pos = 0
    while pos < len(path):
        if path[pos] == "." and segments and pos + 1 < len(path):
            pos += 1
        match = _SEGMENT.match(path, pos)
        if not match:
            raise ValueError(f"cannot parse path {path!r} at character {pos + 1}")
        key, index = match.groups()
        segments.append(int(index) if index is not None else key.replace("\\.", "."))
        pos = match.end()
    if not segments:
        raise ValueError("empty path")
    return segments


def parse_set_value(text: str) -> Any:
    """Type a --set value as helm does: true/false, null, integers; anything else stays a string."""
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(r"-?(0|[1-9][0-9]*)\.[0-9]+", text):
        return float(text)
    return text


def _unwrap(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) if arg is not type(None) for a in _unwrap(arg)]
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    return [annotation]


def _field_by_alias(model: type[BaseModel], key: str) -> Any | None:
    for name, info in model.model_fields.items():
        if key in (info.alias, name):
            return info.annotation
    return None


def model_fields_at(path: list[str | int]) -> list[str] | None:
    """The field names (aliases) allowed at ``path`` of a spec, or None if free-form there."""
    annotation: Any = JobSpec
    for seg in path:
        annotation = _step(annotation, seg)
        if annotation is None:
            return None
    models = [a for a in _unwrap(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    if not models:
        return None
    return [info.alias or name for name, info in models[0].model_fields.items()]


def _step(annotation: Any, seg: str | int) -> Any | None:
    for cand in _unwrap(annotation):
        origin = typing.get_origin(cand)
        if isinstance(cand, type) and issubclass(cand, BaseModel) and isinstance(seg, str):
            return _field_by_alias(cand, seg)
        if origin is dict and isinstance(seg, str):
            return typing.get_args(cand)[1]
        if origin is list and isinstance(seg, int):
            return typing.get_args(cand)[0]
    return None


def apply_sets(doc: dict[str, Any], sets: list[tuple[str, Any]], source: str) -> dict[str, Any]:
    """Return a copy of ``doc`` with each ``(path, value)`` applied. Paths must exist in the spec model."""
    out = copy.deepcopy(doc)
    for raw_path, value in sets:
        try:
            path = split_path(raw_path)
        except ValueError as exc:
            raise UserError.one(raw_path, f"--set: {exc}", source) from None
        annotation: Any = JobSpec
        node: Any = out
        for i, seg in enumerate(path):
            here = _format_path(path[: i + 1])
            annotation = _step(annotation, seg)
            if annotation is None:
                allowed = model_fields_at(path[:i])
                hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
                raise UserError.one(here, f"--set: no such field in the job spec{hint}", source)
            if path[0] == "hyperparameters" and i == 1 and seg not in (node or {}):
                declared = ", ".join(node or {}) or "none"
                raise UserError.one(here, f"--set: hyperparameter is not declared in the spec (declared: {declared})", source)
            last = i == len(path) - 1
            if isinstance(seg, int):
                if not isinstance(node, list) or seg > len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise UserError.one(here, f"--set: index {seg} is out of range (list has {size} items)", source)
                if last:
                    node[seg:seg + 1] = [value]
                else:
                    if seg == len(node):
                        node.append({} if isinstance(path[i + 1], str) else [])
                    node = node[seg]
            else:
                if not isinstance(node, dict):
                    raise UserError.one(here, "--set: parent is not a mapping", source)
                if last:
                    node[seg] = value
                else:
                    if node.get(seg) is None:
                        node[seg] = {} if isinstance(path[i + 1], str) else []
                    node = node[seg]
    return out


def _format_path(path: list[str | int] | tuple[Any, ...]) -> str:
    out = ""
    for seg in path:
        if isinstance(seg, int):
            out += f"[{seg}]"
        else:
            text = str(seg)
            out += ("." if out else "") + (text.replace(".", "\\.") if "." in text else text)
    return out


# --------------------------------------------------------------------------------------------
# pydantic errors → problems
# --------------------------------------------------------------------------------------------

_TAG = re.compile(r"^(str|int|float|bool|none|list\[.*|dict\[.*|function-.*|constrained-.*|lax-or-strict.*|"
                  r"json-or-python.*|literal\[.*|tagged-union.*|nullable.*|[A-Z][A-Za-z]+)$")


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    merged: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, SpecFieldError):
            path, msg = _format_path(cause.loc), str(cause)
        else:
            loc = [seg for seg in err["loc"] if isinstance(seg, int) or not _TAG.match(str(seg)) or _is_key(err["loc"], seg)]
            path = _format_path(loc)
            msg = _message(err, loc)
        bucket = merged.setdefault(path, [])
        if msg not in bucket:
            bucket.append(msg)
    return [Problem(path, " or ".join(msgs)) for path, msgs in merged.items()]


def _is_key(loc: tuple[Any, ...], seg: Any) -> bool:
    # Replica types (Master, Worker…) and user map keys look like tags; keep them when they follow
    # a free-form mapping field.
    idx = loc.index(seg)
    return idx > 0 and loc[idx - 1] in ("replicas", "hyperparameters", "env", "labels", "annotations", "nodeSelector")


def _message(err: dict[str, Any], loc: list[Any]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = model_fields_at(loc[:-1])
        return "unknown field" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    if kind.endswith("_type") or kind in ("literal_error", "enum"):
        return f"{_lower_first(msg)} (got {err.get('input')!r})"
    return _lower_first(msg) + (f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else "")


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def parse_spec(doc: dict[str, Any], source: str) -> JobSpec:
    try:
        return JobSpec.model_validate(doc)
    except ValidationError as exc:
        raise UserError(problems_from_validation(exc), source) from None


def load_spec(path: str | Path, sets: list[tuple[str, Any]] | None = None) -> JobSpec:
    """Read, ``--set`` and validate a job spec file."""
    source = str(path)
    doc = read_document(path)
    if is_manifest(doc):
        raise UserError.one("apiVersion", "this is a kubeflow.org manifest, not a job spec; expected a jobgen spec "
                            "(kind PyTorchJob|TFJob without apiVersion kubeflow.org/v1)", source)
    if sets:
        doc = apply_sets(doc, sets, source)
    return parse_spec(doc, source)
