"""docs/jobspec.md documents every field of the spec model."""

from __future__ import annotations

import re

from pydantic import BaseModel

from jobgen.modelerrors import unwrap as _unwrap
from jobgen.spec import JobSpec

from ..conftest import REPO


def _fields(model: type[BaseModel], seen: set[type]) -> set[str]:
    names = set()
    if model in seen:
        return names
    seen.add(model)
    for name, info in model.model_fields.items():
        names.add(info.alias or name)
        for ann in _unwrap(info.annotation):
            for arg in (ann, *getattr(ann, "__args__", ())):
                for sub in _unwrap(arg):
                    if isinstance(sub, type) and issubclass(sub, BaseModel):
                        names |= _fields(sub, seen)
    return names


def test_every_spec_field_is_documented():
    doc = re.sub(r"```.*?```", "", (REPO / "docs/jobspec.md").read_text(), flags=re.S)
    # Every name that appears inside a `code span`, e.g. `elastic.minReplicas` or `{name, bucket}`.
    documented = {tok for span in re.findall(r"`([^`]+)`", doc) for tok in re.findall(r"[A-Za-z]+", span)}
    missing = sorted(_fields(JobSpec, set()) - documented)
    assert missing == []
