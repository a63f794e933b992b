"""Reading a prediction spec file: YAML → :class:`PredictionSpec`, every problem one line naming file and field."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from jobgen.errors import Problem, UserError
from jobgen.loader import _unwrap, read_document
from jobgen.predict.spec import KIND, PredictionSpec
from jobgen.spec import SpecFieldError

_FREE_FORM = ("env", "labels", "annotations", "podAnnotations", "nodeSelector")


def is_prediction(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == KIND


def _model_at(path: list[str | int]) -> type[BaseModel] | None:
    model: Any = PredictionSpec
    for seg in path:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next((i for n, i in model.model_fields.items() if seg in (i.alias, n)), None)
        if field is None:
            return None
        found = None
        for ann in _unwrap(field.annotation):
            for cand in (ann, *typing.get_args(ann)):
                if isinstance(cand, type) and issubclass(cand, BaseModel):
                    found = cand
        model = found
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _path(loc: list[str | int]) -> str:
    out = ""
    for seg in loc:
        out += f"[{seg}]" if isinstance(seg, int) else ("." if out else "") + str(seg)
    return out


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    merged: dict[str, list[str]] = {}
    for err in exc.errors(include_url=False):
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, SpecFieldError):
            path, msg = _path(list(cause.loc)), str(cause)
        else:
            loc: list[str | int] = []
            for i, seg in enumerate(err["loc"]):  # drop pydantic's union/validator tags, keep map keys
                if isinstance(seg, int) or (i > 0 and loc and loc[-1] in _FREE_FORM) or not _is_tag(str(seg)):
                    loc.append(seg)
            path = _path(loc)
            msg = _message(err, loc)
        bucket = merged.setdefault(path, [])
        if msg not in bucket:
            bucket.append(msg)
    return [Problem(path, " or ".join(msgs)) for path, msgs in merged.items()]


def _is_tag(seg: str) -> bool:
    return seg in ("str", "int", "float", "bool", "none") or seg.startswith(
        ("function-", "constrained-", "lax-or-strict", "json-or-python", "literal[", "list[", "dict[", "nullable")
    )


def _message(err: Any, loc: list[str | int]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        allowed = [i.alias or n for n, i in model.model_fields.items()] if model else []
        return "unknown field" + (f"; expected one of: {', '.join(allowed)}" if allowed else "")
    if kind == "missing":
        return "required field is missing"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    text = msg[:1].lower() + msg[1:]
    value = err.get("input")
    return text if isinstance(value, dict) else f"{text} (got {value!r})"


def parse(doc: dict[str, Any], source: str) -> PredictionSpec:
    try:
        return PredictionSpec.model_validate(doc)
    except ValidationError as exc:
        raise UserError(problems_from_validation(exc), source) from None


def load(path: str | Path, sets: list[tuple[str, Any]] | None = None) -> PredictionSpec:
    """Read, ``--set`` and validate a prediction spec file."""
    source = str(path)
    doc = read_document(path)
    if not is_prediction(doc):
        raise UserError.one("kind", f"expected {KIND} (a prediction spec), got {doc.get('kind')!r}", source)
    for key, value in sets or []:
        doc = _set(doc, key, value, source)
    return parse(doc, source)


def _set(doc: dict[str, Any], key: str, value: Any, source: str) -> dict[str, Any]:
    """``--set a.b=value`` on a prediction spec (mapping paths only; lists are set whole)."""
    import copy

    out = copy.deepcopy(doc)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise UserError.one(key, f"--set: {part} is not a mapping", source)
        node = nxt
    node[parts[-1]] = value
    return out
