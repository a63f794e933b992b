""".gcloudignore keeps terraform state and variables (and other weight) out of
what `make images` uploads to Cloud Build, checked with gcloud's own matcher
(`gcloud meta list-files-for-upload`) on a tree shaped like each build context."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

IGNORE = REPO / ".gcloudignore"

SECRET = [
    "terraform/terraform.tfstate",
    "terraform/terraform.tfstate.backup",
    "terraform/terraform.tfvars",
    "terraform/.terraform/providers/x",
    "terraform/generated/watcher-values.yaml",
    "terraform/.terraform.lock.hcl",
    ".venv/bin/python",
    "jobgen/__pycache__/x.pyc",
    ".git/config",
    "terraform/examples/cheap.tfvars",
    "images/trainer/.venv/lib/x.py",
    "secrets/credentials.json",
]
KEPT = [
    "pyproject.toml",
    "README.md",
    "jobgen/__init__.py",
    "jobgen/watcher/app.py",
    "images/watcher/Dockerfile",
    "images/trainer/src/trainer/train.py",
    "images/trainer/pyproject.toml",
]


def gcloud() -> str:
    path = shutil.which("gcloud")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("gcloud is needed to check .gcloudignore with its own matcher (CI=true: not skipping)")
        pytest.skip("gcloud not on PATH")
    return path


def uploaded(tree: Path, ignore_text: str) -> set[str]:
    for rel in SECRET + KEPT:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text("x")
    (tree / ".gcloudignore").write_text(ignore_text)
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tree.parent / "gcloud-config"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    res = subprocess.run(
        [gcloud(), "meta", "list-files-for-upload", str(tree)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return {line.strip().replace(os.sep, "/") for line in res.stdout.splitlines() if line.strip()}


def test_state_and_variables_are_never_uploaded(tmp_path: Path):
    files = uploaded(tmp_path / "ctx", IGNORE.read_text())
    leaked = [f for f in SECRET if f in files]
    assert not leaked, f"would be uploaded to Cloud Build: {leaked}"
    missing = [f for f in KEPT if f not in files]
    assert not missing, f"build inputs left out: {missing}"


def test_the_check_can_fail(tmp_path: Path):
    """Without .gcloudignore (an empty one), state and tfvars would be uploaded."""
    files = uploaded(tmp_path / "ctx", "# nothing\n")
    assert "terraform/terraform.tfstate" in files and "terraform/terraform.tfvars" in files


def test_images_sh_uses_it_for_every_context():
    text = (REPO / "hack" / "terraform" / "images.sh").read_text()
    assert '--ignore-file "$repo/.gcloudignore"' in text
