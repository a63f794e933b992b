"""Shared test helpers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
JOBS = sorted((REPO / "jobs").glob("*.yaml"))


def load_example(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "jobs" / name).read_text())


@pytest.fixture
def cpu_spec() -> dict[str, Any]:
    return copy.deepcopy(load_example("cpu-ddp.yaml"))


@pytest.fixture
def write_spec(tmp_path: Path):
    def write(doc: dict[str, Any] | str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path

    return write
