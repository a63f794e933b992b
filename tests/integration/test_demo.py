"""`make demo`'s flow end to end, on its own local control plane in a temporary state dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jobgen.localcluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_the_cpu_job_to_success(tmp_path):
    env = {**os.environ, "JOBGEN_LOCALCLUSTER_DIR": str(tmp_path / "demo-cluster")}
    try:
        first = subprocess.run([sys.executable, "-m", "jobgen.demo"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=600)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "jobs/cpu-ddp.yaml: valid PyTorchJob cpu-ddp" in first.stdout
        assert "pytorchjob.kubeflow.org/cpu-ddp serverside-applied" in first.stdout
        rows = [line.split() for line in first.stdout.splitlines() if line.startswith("cpu-ddp ")]
        assert rows and rows[-1][2] == "Succeeded"
        assert "Traceback" not in first.stderr
        # A rerun reuses the running cluster and starts the job afresh.
        second = subprocess.run([sys.executable, "-m", "jobgen.demo"], cwd=REPO, env=env, capture_output=True,
                                text=True, timeout=600)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "already running" in second.stderr
        assert "cpu-ddp deleted" in second.stdout
    finally:
        stopped = LocalCluster(tmp_path / "demo-cluster").down()
        assert "kube-apiserver" in stopped
