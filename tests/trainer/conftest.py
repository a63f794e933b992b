"""Fixtures for the trainer's tests: fake-gcs-server buckets and operator-style process launches."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The packages are installed into the venv by `make venv` (-e images/trainer[test] -e images/tf-trainer).
# Fall back to their sources so the torch-free tests still run where that line is missing.
for _src in (REPO / "images/trainer/src", REPO / "images/tf-trainer/src"):
    try:
        __import__("trainer" if "tf-trainer" not in str(_src) else "tf_trainer")
    except ImportError:
        sys.path.insert(0, str(_src))


def require_torch():  # type: ignore[no-untyped-def]
    """torch, or a skip — a failure in CI, where `make venv` must have installed it."""
    try:
        import torch
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(
                "torch is not installed: make venv must install images/trainer[test] (torch==2.15.0)", pytrace=False
            )
        pytest.skip("torch not installed (pip install -e 'images/trainer[test]')", allow_module_level=True)
    return torch


@pytest.fixture
def gcs_env(emulators, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Point this process (and children started with ``child_env``) at fake-gcs-server."""
    env = {"STORAGE_EMULATOR_HOST": emulators.storage_host, "GOOGLE_CLOUD_PROJECT": emulators.project}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.fixture
def bucket(gcs_env: dict[str, str]) -> Iterator[str]:
    """A fresh bucket for one test (created with the real client against the emulator)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=gcs_env["GOOGLE_CLOUD_PROJECT"], credentials=AnonymousCredentials())
    name = f"t-{uuid.uuid4().hex[:16]}"
    client.create_bucket(name)
    yield name


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(gcs_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a trainer process: this one's, minus any distributed variables, plus GCS."""
    drop = {
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
        "DATA_URI",
        "OUTPUT_URI",
        "CHECKPOINT_URI",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PET_")}
    env.update(gcs_env)
    src = [str(REPO / "images/trainer/src"), str(REPO / "images/tf-trainer/src"), str(REPO)]
    env.update(
        {
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(src + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
        }
    )
    env.update(extra)
    return env


def operator_pod_env(rank: int, pods: int, port: int, nproc: str = "auto") -> dict[str, str]:
    """What training-operator v1.9.4 sets in pod ``rank`` of a PyTorchJob with a Master and
    ``pods - 1`` Workers (pkg/controller.v1/pytorch/envvar.go, master.go)."""
    per = int(nproc) if nproc.isdigit() else 1
    return {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(port),
        "WORLD_SIZE": str(pods * per),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NPROC_PER_NODE": nproc,
        "PET_NNODES": str(pods),
        "PYTHONUNBUFFERED": "1",
    }


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer.train", *args]


def torchrun_cmd(nproc: int, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "trainer.train",
        *args,
    ]


def run_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[tuple[int, str, str]]:
    out = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=timeout)
            out.append((p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return out
