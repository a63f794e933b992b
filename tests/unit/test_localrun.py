"""`jobgen run --local`: real processes, the operator's env contract, failure handling."""

from __future__ import annotations

import json
import subprocess
import sys

from ..conftest import REPO

PROBE = "tests/fixtures/rendezvous_probe.py"


def run_local(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jobgen.cli",
            "run",
            "--local",
            "jobs/cpu-ddp.yaml",
            "--set-string",
            "command[0]=python",
            "--set-string",
            f"command[1]={PROBE}",
            "--set",
            "command[2]=--probe",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
    )


def test_replicas_rendezvous_with_operator_env():
    proc = run_local(
        "--set", "replicas.Worker.replicas=2", "-p", "lr=0.25", "--set-string", "storage.data=gs://bucket/v1"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[master-0]") and "ranks=[0, 1, 2]" in line for line in lines), proc.stdout
    for rank, prefix in ((0, "[master-0]"), (1, "[worker-0]"), (2, "[worker-1]")):
        assert any(
            line.startswith(prefix) and f"rank={rank} world=3 nnodes=3 lr=0.25 data=gs://bucket/v1" in line
            for line in lines
        ), proc.stdout
    assert "pytorchjob/cpu-ddp Succeeded (local)" in proc.stderr


def test_failing_replica_fails_the_run_and_stops_the_others():
    proc = run_local("--set-string", "command[2]=--fail-rank=1", "--set-string", "command[3]=--exit-code=7")
    assert proc.returncode == 7, proc.stdout + proc.stderr
    assert "pytorchjob/cpu-ddp Failed (local)" in proc.stderr
    assert "cpu-ddp-worker-0   7" in proc.stderr


def test_dry_run_prints_the_plan():
    proc = run_local("--dry-run")
    assert proc.returncode == 0, proc.stderr
    plan = {r["replica"]: r for r in json.loads(proc.stdout)}
    assert set(plan) == {"cpu-ddp-master-0", "cpu-ddp-worker-0"}
    env = plan["cpu-ddp-worker-0"]["env"]
    assert env["MASTER_ADDR"] == "127.0.0.1" and env["RANK"] == "1" and env["WORLD_SIZE"] == "2"
    assert env["PET_NPROC_PER_NODE"] == "auto" and env["OMP_NUM_THREADS"] == "1"
    assert plan["cpu-ddp-master-0"]["argv"][0] == sys.executable


def test_tf_config_points_at_local_ports():
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "run", "--local", "jobs/tf-mwms.yaml", "--dry-run"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    plan = {r["replica"]: json.loads(r["env"]["TF_CONFIG"]) for r in json.loads(proc.stdout)}
    chief = plan["tf-mwms-chief-0"]
    assert chief["task"] == {"type": "chief", "index": 0}
    endpoints = chief["cluster"]["chief"] + chief["cluster"]["worker"]
    assert len(endpoints) == 3 and len(set(endpoints)) == 3
    assert all(e.startswith("127.0.0.1:") for e in endpoints)
    assert plan["tf-mwms-worker-1"]["cluster"] == chief["cluster"]


def test_needs_a_command():
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "run", "--local", "jobs/cpu-ddp.yaml", "--set", "command=null"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert proc.returncode == 2 and "needs the container's command" in proc.stderr
    assert "Traceback" not in proc.stderr
