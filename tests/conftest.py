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


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory):
    """fake-gcs-server + the Pub/Sub emulator, started for this test session and stopped after it.

    Yields an EmulatorInfo; ``info.env()`` has STORAGE_EMULATOR_HOST and PUBSUB_EMULATOR_HOST.
    fake-gcs-server publishes GCS notifications (JSON_API_V1) to topic ``info.topic``.
    """
    import os

    from jobgen.emulators import EmulatorError, Emulators

    emu = Emulators(tmp_path_factory.mktemp("emulators"))
    try:
        info = emu.up()
    except EmulatorError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"emulators unavailable in CI: {exc}", pytrace=False)
        pytest.skip(f"emulators unavailable: {exc}")
    try:
        yield info
    finally:
        emu.down()
