"""Fixtures for the prediction tests: fake-gcs-server buckets, a registered model, input batches."""

from __future__ import annotations

import io
import json
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from ..conftest import REPO

try:
    import trainer  # noqa: F401 - installed by make venv (-e images/trainer[test])
except ImportError:
    sys.path.insert(0, str(REPO / "images/trainer/src"))

INPUT_DIM = 16
CLASSES = 4


def require_torch() -> Any:
    """torch, or a skip — a failure in CI, where `make venv` installs it."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("torch is not installed: make venv must install images/trainer[test]", pytrace=False)
        pytest.skip("torch not installed (pip install -e 'images/trainer[test]')", allow_module_level=True)
    return torch


@pytest.fixture
def gcs_env(emulators: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"STORAGE_EMULATOR_HOST": emulators.storage_host, "GOOGLE_CLOUD_PROJECT": emulators.project}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def storage(gcs_env: dict[str, str]) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    return gcs.Client(project=gcs_env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials())


@pytest.fixture
def buckets(storage: Any) -> Iterator[dict[str, str]]:
    """Fresh buckets for inputs, models and predictions."""
    tag = uuid.uuid4().hex[:10]
    names = {role: f"t-{role}-{tag}" for role in ("inputs", "models", "preds")}
    for name in names.values():
        storage.create_bucket(name)
    yield names


def make_model(seed: int, hidden: int = 32) -> Any:
    torch = require_torch()
    from trainer.model import MLP

    torch.manual_seed(seed)
    return MLP(INPUT_DIM, CLASSES, hidden=hidden, dropout=0.0).eval()


@dataclass
class Published:
    version: str
    model: Any  # the torch module (eval mode)


def publish(
    models_uri: str,
    version: str,
    seed: int,
    value: float,
    pt2: bool = True,
    pt: bool = True,
    dynamic: bool = True,
    hidden: int = 32,
) -> Published:
    """Publish a model version the way the trainer does (registry layout, _COMPLETE last) and promote it."""
    torch = require_torch()
    from trainer.registry import Registry

    net = make_model(seed, hidden)
    files: dict[str, bytes] = {}
    if pt:
        buf = io.BytesIO()
        torch.save(net.state_dict(), buf)
        files["model.pt"] = buf.getvalue()
    if pt2:
        example = (torch.zeros(8, INPUT_DIM),)
        shapes = {"x": {0: torch.export.Dim("batch", min=1)}} if dynamic else None
        program = torch.export.export(net, example, dynamic_shapes=shapes)
        buf = io.BytesIO()
        torch.export.save(program, buf)
        files["model.pt2"] = buf.getvalue()
    lineage = {
        "job_name": f"train-{version}",
        "input_dim": INPUT_DIM,
        "num_classes": CLASSES,
        "hyperparameters": {"model": "trainer.model:default_model", "hidden": hidden, "dropout": 0.0},
    }
    reg = Registry(models_uri)
    reg.publish(version, files, {"val_accuracy": value}, lineage, [])
    reg.promote(version, "val_accuracy", value, "max")
    return Published(version, net)


def write_inputs(
    storage: Any, bucket: str, prefix: str, count: int, rows: int = 5, seed: int = 0, ext: str = "npy"
) -> dict[str, np.ndarray]:
    """``count`` input files of ``rows`` examples each; returns name → array."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(count):
        x = rng.normal(size=(rows, INPUT_DIM)).astype(np.float32)
        buf = io.BytesIO()
        if ext == "npz":
            np.savez(buf, x=x, id=np.array([f"item-{i}-{r}" for r in range(rows)]))
        else:
            np.save(buf, x)
        name = f"in-{i:03d}.{ext}"
        storage.bucket(bucket).blob(f"{prefix}/{name}").upload_from_string(buf.getvalue())
        out[name] = x
    return out


def read_jsonl(storage: Any, bucket: str, name: str) -> list[dict[str, Any]]:
    text = storage.bucket(bucket).blob(name).download_as_text()
    return [json.loads(line) for line in text.splitlines()]


def generations(storage: Any, bucket: str, prefix: str) -> dict[str, int]:
    return {b.name: int(b.generation) for b in storage.list_blobs(bucket, prefix=prefix)}
