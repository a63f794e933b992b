"""Reading a prediction spec file: YAML -> :class:`PredictionSpec`, every problem one line naming file and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobgen import modelerrors
from jobgen.errors import UserError
from jobgen.loader import apply_sets, read_document
from jobgen.predict.spec import KIND, PredictionSpec


def is_prediction(doc: dict[str, Any]) -> bool:
    return doc.get("kind") == KIND


def parse(doc: dict[str, Any], source: str) -> PredictionSpec:
    return modelerrors.parse(PredictionSpec, doc, source)


def load(path: str | Path, sets: list[tuple[str, Any]] | None = None) -> PredictionSpec:
    """Read, ``--set`` (helm syntax, as for job specs) and validate a prediction spec file."""
    source = str(path)
    doc = read_document(path)
    if not is_prediction(doc):
        raise UserError.one("kind", f"expected {KIND} (a prediction spec), got {doc.get('kind')!r}", source)
    if sets:
        doc = apply_sets(doc, sets, source, model=PredictionSpec)
    return parse(doc, source)
