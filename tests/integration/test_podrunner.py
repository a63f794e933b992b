"""Pods on the local control plane backed by real processes: job states follow real outcomes."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from jobgen import kube
from jobgen.loader import load_spec
from jobgen.localcluster.testing import condition, wait_for
from jobgen.podrunner import PodRunner, pod_settings
from jobgen.render import render

REPO = Path(__file__).resolve().parents[2]
NS = "training"
PROBE = "tests/fixtures/rendezvous_probe.py"


@pytest.fixture
def runner(local_cluster, tmp_path):
    cluster = kube.connect(None, local_cluster.kubeconfig)
    r = PodRunner(cluster, NS, tmp_path / "logs", cwd=str(REPO), poll=0.2)
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    yield r, cluster
    r.shutdown()
    thread.join(timeout=10)


def submit_probe(cluster, name: str, *probe_args: str, workers: int = 2, restart: str = "OnFailure") -> None:
    labels, annotations = pod_settings()
    sets = [
        ("name", name),
        ("replicas.Worker.replicas", workers),
        ("command", ["python", PROBE, *probe_args]),
        ("podAnnotations", annotations),
        ("labels", {**labels}),
        ("restartPolicy", restart),
    ]
    manifest = render(load_spec(REPO / "jobs/cpu-ddp.yaml", sets))
    cluster.apply(manifest)


def test_job_succeeds_when_processes_succeed(local_cluster, runner):
    r, cluster = runner
    name = f"run-ok-{uuid.uuid4().hex[:4]}"
    submit_probe(cluster, name)
    job = wait_for(lambda: condition(local_cluster.get("pytorchjobs", name, NS), "Succeeded"), 120, f"{name} done")
    assert job
    assert r.done == {f"{name}-master-0": 0, f"{name}-worker-0": 0, f"{name}-worker-1": 0}
    log = (Path(r.log_dir) / f"{name}-master-0.log").read_text()
    assert "ranks=[0, 1, 2]" in log  # the three processes really met over the operator's env
    pod = local_cluster.get("pod", f"{name}-master-0", NS)
    assert pod["status"]["phase"] == "Succeeded"


def test_job_fails_with_the_process_exit_code(local_cluster, runner):
    r, cluster = runner
    name = f"run-bad-{uuid.uuid4().hex[:4]}"
    # Under ExitCode, 5 is a permanent error: the operator fails the job instead of recreating the pod.
    submit_probe(cluster, name, "--fail-rank=0", "--exit-code=5", workers=1, restart="ExitCode")
    wait_for(lambda: condition(local_cluster.get("pytorchjobs", name, NS), "Failed"), 120, f"{name} failed")
    pod = local_cluster.get("pod", f"{name}-master-0", NS)
    assert pod["status"]["phase"] == "Failed"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 5
