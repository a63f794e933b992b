"""`python -m jobgen.localcluster up|status|env|down` as a user runs it: the processes outlive
the command, `up` is idempotent, `down` leaves nothing running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobgen.localcluster import LocalCluster, procs
from jobgen.localcluster.bins import REPO_ROOT, binaries

pytestmark = pytest.mark.integration


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobgen.localcluster", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )


def test_cli_up_status_env_down(tmp_path: Path) -> None:
    if binaries().missing() and shutil.which("go") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("go not found: install Go >= 1.26 to build the local control plane", pytrace=False)
        pytest.skip("go not found: install Go >= 1.26 to build the local control plane")
    state = tmp_path / "cluster"
    up = run("up", "--state-dir", str(state))
    try:
        assert up.returncode == 0, up.stderr
        kubeconfig = up.stdout.strip()
        assert kubeconfig == str(state / "kubeconfig")
        pids = {pf.name: pf.read() for pf in procs.pidfiles(state)}
        assert set(pids) == {
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "training-operator",
            "kwok",
        }
        assert all(e is not None and procs.running(*e) for e in pids.values())  # outlived `up`

        ready = subprocess.run(
            [str(binaries().path("kubectl")), f"--kubeconfig={kubeconfig}", "get", "--raw", "/readyz"],
            capture_output=True,
            text=True,
        )
        assert ready.stdout == "ok", ready.stderr
        status = run("status", "--state-dir", str(state))
        assert status.returncode == 0 and "apiserver ready" in status.stdout, status.stdout
        env = run("env", "--state-dir", str(state))
        assert env.stdout.strip() == f"export KUBECONFIG={kubeconfig}"

        t = time.monotonic()
        again = run("up", "--state-dir", str(state))
        assert again.returncode == 0 and "already running" in again.stderr
        assert time.monotonic() - t < 10
        assert {pf.name: pf.read() for pf in procs.pidfiles(state)} == pids  # nothing restarted
    finally:
        down = run("down", "--state-dir", str(state))
    assert down.returncode == 0, down.stderr
    assert "kube-apiserver" in down.stdout
    for entry in pids.values():
        assert entry is not None and not procs.running(*entry)
    assert not procs.pidfiles(state)
    assert LocalCluster(state).info() is None
    assert run("status", "--state-dir", str(state)).returncode == 1
