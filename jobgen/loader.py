"""Reading spec and manifest files and applying ``--set`` (helm syntax) to specs."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from jobgen import modelerrors
from jobgen.errors import UserError, format_path
from jobgen.spec import JobSpec

if TYPE_CHECKING:
    from pydantic import BaseModel

_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# a base class chosen at run time (libyaml's when present), which mypy cannot check
class _StrictLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that rejects duplicate keys, as kubectl does since 1.27."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
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


def apply_sets(
    doc: dict[str, Any], sets: list[tuple[str, Any]], source: str, model: type[BaseModel] = JobSpec
) -> dict[str, Any]:
    """Return a copy of ``doc`` with each ``(path, value)`` applied. Paths must exist in ``model``."""
    out = copy.deepcopy(doc)
    for raw_path, value in sets:
        try:
            path = split_path(raw_path)
        except ValueError as exc:
            raise UserError.one(raw_path, f"--set: {exc}", source) from None
        annotation: Any = model
        node: Any = out
        for i, seg in enumerate(path):
            here = format_path(path[: i + 1])
            annotation = modelerrors.step(annotation, seg)
            if annotation is None:
                allowed = modelerrors.fields_at(model, path[:i])
                hint = f"; expected one of: {', '.join(allowed)}" if allowed else ""
                raise UserError.one(here, f"--set: no such field in the job spec{hint}", source)
            if path[0] == "hyperparameters" and i == 1 and seg not in (node or {}):
                declared = ", ".join(node or {}) or "none"
                raise UserError.one(
                    here, f"--set: hyperparameter is not declared in the spec (declared: {declared})", source
                )
            last = i == len(path) - 1
            if isinstance(seg, int):
                if not isinstance(node, list) or seg > len(node):
                    size = len(node) if isinstance(node, list) else 0
                    raise UserError.one(here, f"--set: index {seg} is out of range (list has {size} items)", source)
                if last:
                    node[seg : seg + 1] = [value]
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


def parse_spec(doc: dict[str, Any], source: str) -> JobSpec:
    return modelerrors.parse(JobSpec, doc, source)


def load_spec(path: str | Path, sets: list[tuple[str, Any]] | None = None) -> JobSpec:
    """Read, ``--set`` and validate a job spec file."""
    return spec_from_document(read_document(path), str(path), sets)


def spec_from_document(doc: dict[str, Any], source: str, sets: list[tuple[str, Any]] | None = None) -> JobSpec:
    """``--set`` and validate a job spec already read (stdin can be read only once)."""
    if is_manifest(doc):
        raise UserError.one(
            "apiVersion",
            "this is a kubeflow.org manifest, not a job spec; expected a jobgen spec "
            "(kind PyTorchJob|TFJob without apiVersion kubeflow.org/v1)",
            source,
        )
    if sets:
        doc = apply_sets(doc, sets, source)
    return parse_spec(doc, source)
