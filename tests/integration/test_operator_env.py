"""jobgen.kubeflow's operator env matches the env that the real training-operator v1.9.4 puts into pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobgen.kubeflow import TrainingJob
from jobgen.loader import load_spec
from jobgen.localcluster.testing import wait_for
from jobgen.render import render

REPO = Path(__file__).resolve().parents[2]
NS = "training"

CASES = {
    "static": ("jobs/cpu-ddp.yaml", ["--set", "replicas.Worker.replicas=2"]),
    "nproc": ("jobs/cpu-ddp.yaml", ["--set", "distribution.nprocPerNode=4"]),
    "nproc-auto": ("jobs/mnist-ddp.yaml", ["--set", "replicas.Worker.replicas=1"]),
    "elastic": (
        "jobs/elastic-ddp.yaml",
        ["--set", "replicas.Worker.replicas=2", "--set", "distribution.elastic.rdzvId=run-1"],
    ),
    "tf": ("jobs/tf-mwms.yaml", []),
}


def _sets(args: list[str]) -> list[tuple[str, object]]:
    from jobgen.loader import parse_set_value

    return [(a.split("=", 1)[0], parse_set_value(a.split("=", 1)[1])) for a in args[1::2]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_env_matches_real_operator(local_cluster, case):
    spec_path, sets = CASES[case]
    name = f"env-{case}-{uuid.uuid4().hex[:4]}"
    sets = [*sets, "--set", f"name={name}"]
    env = {**os.environ, "KUBECONFIG": local_cluster.kubeconfig}
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "submit", spec_path, *sets],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = render(load_spec(REPO / spec_path, _sets(sets)))
    job = TrainingJob(manifest)
    expected_pods = {job.pod_name(role, i): (role, i) for role, i in job.replicas()}

    def pods():
        items = local_cluster.get("pods", namespace=NS, selector=f"training.kubeflow.org/job-name={name}")["items"]
        return items if {p["metadata"]["name"] for p in items} == set(expected_pods) else None

    container = job.kind.container
    for pod in wait_for(pods, 90, f"pods of {name}"):
        role, index = expected_pods[pod["metadata"]["name"]]
        (c,) = [c for c in pod["spec"]["containers"] if c["name"] == container]
        actual = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        spec_env = {e["name"] for e in job.container(role).get("env", [])}
        injected = {k: v for k, v in actual.items() if k not in spec_env}
        want = job.operator_env(role, index)
        if "TF_CONFIG" in want:
            assert json.loads(injected.pop("TF_CONFIG")) == json.loads(want.pop("TF_CONFIG"))
        assert injected == want, pod["metadata"]["name"]
    local_cluster.kubectl("delete", manifest["kind"].lower(), name, "-n", NS, "--wait=false")
