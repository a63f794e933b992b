"""What the Dockerfiles promise, checked statically: one file builds both the GKE image and the local
one (the base is a build argument), locked dependencies are installed before the source is copied,
the CUDA base does not duplicate the CUDA libraries of the PyPI wheels, the CA bundle is never copied,
and the locks are current."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from jobgen.localcluster.realnode import IMAGES

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "trainer": REPO / "images/trainer/Dockerfile",
    "tf-trainer": REPO / "images/tf-trainer/Dockerfile",
    "watcher": REPO / "images/watcher/Dockerfile",
}


def instructions(path: Path) -> list[str]:
    """Dockerfile instructions with continuation lines joined and comments dropped."""
    out: list[str] = []
    cur = ""
    for line in path.read_text().splitlines():
        if not cur and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        cur += line
        if cur.strip():
            out.append(" ".join(cur.split()))
        cur = ""
    return out


@pytest.mark.parametrize("name", DOCKERFILES)
def test_one_stage_on_the_base_build_argument(name):
    ins = instructions(DOCKERFILES[name])
    assert any(re.fullmatch(r"ARG BASE_IMAGE=\S+", i) for i in ins), "no ARG BASE_IMAGE with a GKE default"
    assert [i for i in ins if i.startswith("FROM ")] == ["FROM ${BASE_IMAGE}"]


@pytest.mark.parametrize("name", ["trainer", "tf-trainer"])
def test_the_gke_base_is_the_cuda_base_flavour_not_runtime(name):
    text = DOCKERFILES[name].read_text()
    default = re.search(r"(?m)^ARG BASE_IMAGE=(\S+)$", text).group(1)
    assert default.startswith("nvidia/cuda:${CUDA_VERSION}-base-"), default
    assert "-runtime-" not in default and "-devel-" not in default


@pytest.mark.parametrize("name", DOCKERFILES)
def test_locked_dependencies_come_before_the_source(name):
    ins = instructions(DOCKERFILES[name])
    lock = next(n for n, i in enumerate(ins) if i.startswith("COPY") and "requirements" in i and ".lock" in i)
    install = next(n for n, i in enumerate(ins) if "--require-hashes" in i)
    source = next(n for n, i in enumerate(ins) if i.startswith("COPY") and re.search(r"\bsrc\b|\bjobgen\b", i))
    assert lock < install < source, (lock, install, source)
    assert "--no-deps" in ins[install], "the lock is complete: nothing unpinned may be resolved"
    package = next(n for n, i in enumerate(ins) if i.startswith("RUN") and n > source and "pip install" in i)
    assert "--no-deps" in ins[package] and "--no-build-isolation" in ins[package], "the package layer downloads"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_non_root_and_no_ca_bundle_in_the_image(name):
    ins = instructions(DOCKERFILES[name])
    users = [i.split()[1] for i in ins if i.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    for i in ins:
        if i.startswith(("COPY", "ADD")):
            assert "ca-certificates.crt" not in i and "/etc/ssl" not in i, i


def test_the_trainer_image_holds_kfp_for_the_lightweight_components():
    lock = (REPO / "images/trainer/requirements.lock").read_text()
    assert re.search(r"(?m)^kfp==", lock), "kfp must be in the image: components do not pip-install at start-up"
    assert re.search(r"(?m)^torch==2\.15\.0 ", lock)


def test_dockerignore_files_send_the_locks():
    assert "!requirements.lock" in (REPO / "images/trainer/.dockerignore").read_text()
    assert "!images/watcher/requirements.lock" in (REPO / "images/watcher/Dockerfile.dockerignore").read_text()
    tf = (REPO / "images/tf-trainer/Dockerfile.dockerignore").read_text()
    assert "!tf-trainer/requirements.lock" in tf and "!tf-trainer/requirements-cpu.lock" in tf


def test_locks_are_current():
    """hack/lock-images.sh --check re-resolves against the package index and compares."""
    proc = subprocess.run(
        [str(REPO / "hack/lock-images.sh"), "--check"], capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, proc.stderr


def test_the_build_script_and_the_node_name_the_same_images():
    for name, ref in IMAGES.items():
        out = subprocess.run(
            ["bash", "-c", f'source "{REPO}/hack/images/lib.sh" && image_ref {name}'],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == ref, name
