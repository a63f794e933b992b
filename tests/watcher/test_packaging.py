"""The image and the import discipline (no Docker here: the Dockerfile is checked as text, and the
same `pip install .[watcher]` is exercised by `make watcher-image-check`, see docs/watcher.md)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.watcher.conftest import REPO

DOCKERFILE = REPO / "images" / "watcher" / "Dockerfile"


def test_dockerfile_slim_nonroot_watcher_extra_only():
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.\d+-slim", text, re.M)  # hack/images-local.sh overrides it
    assert re.findall(r"^USER (\S+)", text, re.M) == ["65532:65532"]  # numeric: runAsNonRoot can verify it
    # the locked [watcher] extra (hash-checked), then jobgen alone; never the trainers' torch
    assert "requirements.lock" in text and "--require-hashes" in text and "torch" not in text
    lock = (REPO / "images" / "watcher" / "requirements.lock").read_text()
    assert "\ntorch==" not in lock and "\ngoogle-cloud-pubsub==" in lock and "\ntenacity==" in lock
    assert 'ENTRYPOINT ["jobgen"]' in text
    ignore = (REPO / "images" / "watcher" / "Dockerfile.dockerignore").read_text()
    assert "*" in ignore.splitlines() and "!jobgen/**" in ignore


def test_watcher_extra_declares_its_imports():
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["watcher"]
    names = {re.split(r"[<>=!~\[]", e)[0] for e in extras}
    assert {"google-cloud-pubsub", "google-cloud-storage", "prometheus-client", "tenacity"} <= names


def test_import_jobgen_stays_light():
    code = (
        "import sys, jobgen, jobgen.cli, jobgen.watcher, jobgen.watcher.config, jobgen.watcher.sensor.events, "
        "jobgen.watcher.sensor.rules\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('google', 'kubernetes', 'prometheus_client', 'grpc')]\n"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.strip() == "[]"
    init = (REPO / "jobgen" / "__init__.py").read_text()
    assert "watcher" not in init
