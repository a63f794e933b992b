"""Harness for the pipeline tests: job specs for the local control plane and the emulators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# The integration suite's session fixture (real control plane), re-exported like tests/watcher does.

REPO = Path(__file__).resolve().parents[2]


def local_spec(name: str, data: str, output: str, checkpoints: str, epochs: int = 3) -> dict[str, Any]:
    """The demo's CPU DDP spec (pods run by the pod runner), small and fast."""
    from jobgen.demo import spec_doc

    doc = spec_doc(fast=True)
    doc["name"] = name
    doc["hyperparameters"]["epochs"]["default"] = epochs
    doc["storage"] = {"data": data, "output": output, "checkpoints": checkpoints}
    return doc


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
