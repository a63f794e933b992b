"""Helpers for the Terraform tests: the terraform binary, the locally built
google provider, an initialised copy of terraform/ and checkov."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
TF_DIR = REPO / "terraform"
HACK = REPO / "hack" / "terraform"


def versions() -> dict[str, str]:
    out = {}
    for raw in (HACK / "versions.env").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def terraform_bin() -> str | None:
    return shutil.which("terraform")


def tf_env(workdir: Path) -> dict[str, str]:
    rc = workdir / ".terraformrc"
    rc.touch()
    env = dict(os.environ)
    env.update(TF_CLI_CONFIG_FILE=str(rc), TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", NO_COLOR="1")
    return env


def provider_mirror() -> Path:
    out = subprocess.run([str(HACK / "build-provider.sh"), "--print-dir"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def provider_built() -> bool:
    return (
        subprocess.run([str(HACK / "build-provider.sh"), "--check"], capture_output=True, check=False).returncode == 0
    )


def skip_or_fail(reason: str) -> NoReturn:
    """Skip locally; under CI=true a test that cannot run fails with the reason (GUIDE.md)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run (CI=true: not skipping): {reason}")
    pytest.skip(reason)


def require_terraform() -> str:
    tf = terraform_bin()
    if tf is None:
        skip_or_fail("terraform not on PATH: install Terraform >= 1.9 to run the Terraform tests")
    return tf


def require_provider() -> Path:
    require_terraform()
    if not provider_built():
        v = versions()["TF_GOOGLE_PROVIDER_VERSION"]
        skip_or_fail(
            f"hashicorp/google {v} is not in the local mirror {provider_mirror()}: "
            "run `make tf-provider` (hack/terraform/build-provider.sh builds it from the Go module proxy, "
            "about 8-12 min cold on 2 cores); no Terraform registry is reachable here"
        )
    return provider_mirror()


def copy_tf(dest: Path) -> Path:
    """A copy of terraform/ without local state, so tests never write into the work tree."""
    ignore = shutil.ignore_patterns(".terraform", "generated", "terraform.tfvars", "*.tfstate*", ".terraform.lock.hcl")
    shutil.copytree(TF_DIR, dest, ignore=ignore)
    return dest


def run_tf(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["terraform", f"-chdir={workdir}", *args, "-no-color"],
        capture_output=True,
        text=True,
        env=tf_env(workdir),
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def tf_initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """terraform/ copied and `terraform init`ed from the local provider mirror (no registry)."""
    mirror = require_provider()
    work = copy_tf(tmp_path_factory.mktemp("tf") / "terraform")
    res = run_tf(work, "init", "-backend=false", "-input=false", f"-plugin-dir={mirror}")
    assert res.returncode == 0, res.stdout + res.stderr
    return work
