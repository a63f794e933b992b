"""kind-based end-to-end tests: skipped, with the reason, unless docker (with a running engine)
and kind are available. `hack/kind/kind.sh up` creates the cluster and installs manifests/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobgen.localcluster.bins import REPO_ROOT, binaries

KIND_CONTEXT = "kind-jobgen"


def _kind_path() -> str | None:
    built = binaries().path("kind")
    return str(built) if built.exists() else shutil.which("kind")


def _why_not() -> str | None:
    if shutil.which("docker") is None:
        return "docker not found: the kind e2e tests need Docker (the local control plane covers CI)"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker engine answers 'docker info': the kind e2e tests need a running Docker"
    if _kind_path() is None:
        return "kind not found: install kind v0.33.0 or run 'hack/build-bins.sh kind'"
    return None


@pytest.fixture(scope="session")
def kind_cluster() -> Iterator[str]:
    """The kubectl context of the kind cluster, created (and manifests/ installed) if needed."""
    reason = _why_not()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", str(REPO_ROOT / "hack" / "kind" / "kind.sh"), "up"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"hack/kind/kind.sh up failed: {proc.stderr.strip()[-2000:]}", pytrace=False)
    yield KIND_CONTEXT


@pytest.fixture(scope="session")
def trainer_image(kind_cluster: str) -> str:
    """$JOBGEN_TRAINER_IMAGE, or images/trainer built with docker; loaded into the kind nodes."""
    image = os.environ.get("JOBGEN_TRAINER_IMAGE")
    if not image:
        dockerfile = REPO_ROOT / "images" / "trainer" / "Dockerfile"
        if not dockerfile.exists():
            pytest.skip(f"no trainer image: set JOBGEN_TRAINER_IMAGE or add {dockerfile.relative_to(REPO_ROOT)}")
        image = "jobgen-trainer:e2e"
        build = subprocess.run(
            ["docker", "build", "-t", image, "-f", str(dockerfile), str(REPO_ROOT)], capture_output=True, text=True
        )
        if build.returncode != 0:
            pytest.fail(f"docker build of the trainer image failed: {build.stderr.strip()[-2000:]}", pytrace=False)
    kind = _kind_path()
    assert kind
    load = subprocess.run([kind, "load", "docker-image", image, "--name", "jobgen"], capture_output=True, text=True)
    if load.returncode != 0:
        pytest.fail(f"kind load docker-image {image} failed: {load.stderr.strip()}", pytrace=False)
    return image


@pytest.fixture(scope="session")
def kubectl_path() -> str:
    built = binaries().path("kubectl")
    return str(built) if Path(built).exists() else (shutil.which("kubectl") or "kubectl")
