"""`jobgen submit/status/delete` against the real local control plane: kube-apiserver (RBAC, strict
server-side schema), scheduler, training-operator v1.9.4 and kwok GPU nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobgen.localcluster.testing import condition, wait_for

REPO = Path(__file__).resolve().parents[2]
NS = "training"  # created by the cluster's install of manifests/, with the jobgen-trainer KSA


def jobgen(cluster, *args: str, kubeconfig: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": kubeconfig or cluster.kubeconfig}
    return subprocess.run(
        [sys.executable, "-m", "jobgen.cli", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def submit(cluster, spec: str, name: str, *extra: str) -> subprocess.CompletedProcess:
    proc = jobgen(cluster, "submit", spec, "--set", f"name={name}", *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def job(cluster, kind: str, name: str) -> dict:
    return json.loads(cluster.kubectl("get", kind, name, "-n", NS, "-o", "json", "--show-managed-fields").stdout)


def applied_by_jobgen(obj: dict) -> dict:
    (entry,) = [f for f in obj["metadata"]["managedFields"] if f["manager"] == "jobgen" and f["operation"] == "Apply"]
    return entry


@pytest.mark.parametrize(
    "spec,kind",
    [
        ("jobs/cpu-ddp.yaml", "pytorchjobs"),
        ("jobs/mnist-ddp.yaml", "pytorchjobs"),
        ("jobs/elastic-ddp.yaml", "pytorchjobs"),
        ("jobs/tf-mwms.yaml", "tfjobs"),
    ],
)
def test_every_example_is_accepted_and_resubmit_is_idempotent(local_cluster, spec, kind):
    name = unique(Path(spec).stem[:8])
    out = submit(local_cluster, spec, name)
    assert out.stdout.strip() == f"{kind[:-1]}.kubeflow.org/{name} serverside-applied"
    first = job(local_cluster, kind, name)
    managers = {(f["manager"], f["operation"]) for f in first["metadata"]["managedFields"]}
    assert ("jobgen", "Apply") in managers
    submit(local_cluster, spec, name)
    second = job(local_cluster, kind, name)
    # Re-applying the same spec changes nothing: same object, same spec generation, same owned fields.
    assert second["metadata"]["uid"] == first["metadata"]["uid"]
    assert second["metadata"]["generation"] == first["metadata"]["generation"]
    assert applied_by_jobgen(second)["fieldsV1"] == applied_by_jobgen(first)["fieldsV1"]
    # A changed spec is an update of the same object, not a new one.
    submit(local_cluster, spec, name, "--set", "runPolicy.backoffLimit=7")
    third = job(local_cluster, kind, name)
    assert third["metadata"]["uid"] == first["metadata"]["uid"]
    assert third["spec"]["runPolicy"]["backoffLimit"] == 7
    jobgen(local_cluster, "delete", name, "-n", NS)


def test_cpu_job_succeeds_and_status_shows_it(local_cluster):
    name = unique("cpu")
    submit(local_cluster, "jobs/cpu-ddp.yaml", name)
    wait_for(lambda: condition(job(local_cluster, "pytorchjobs", name), "Succeeded"), 120, f"{name} Succeeded")
    status = jobgen(local_cluster, "status", name, "-n", NS)
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "KIND", "STATE"]
    assert row.split()[:3] == [name, "PyTorchJob", "Succeeded"]
    listed = local_cluster.kubectl("get", "pytorchjobs", "-n", NS).stdout
    assert name in listed
    table = jobgen(local_cluster, "status", "-n", NS)
    assert any(line.split()[:1] == [name] for line in table.stdout.splitlines())


def test_gpu_spot_pods_land_on_matching_nodes(local_cluster):
    name = unique("l4")
    submit(local_cluster, "jobs/mnist-ddp.yaml", name, "--set", "replicas.Worker.replicas=1")
    pods = wait_for(
        lambda: [
            p
            for p in local_cluster.get("pods", namespace=NS, selector=f"training.kubeflow.org/job-name={name}")["items"]
            if p["spec"].get("nodeName")
        ]
        or None,
        120,
        f"{name} pods scheduled",
    )
    wait_for(
        lambda: len(
            [
                p
                for p in local_cluster.get("pods", namespace=NS, selector=f"training.kubeflow.org/job-name={name}")[
                    "items"
                ]
                if p["spec"].get("nodeName")
            ]
        )
        == 2,
        60,
        "both pods scheduled",
    )
    pods = local_cluster.get("pods", namespace=NS, selector=f"training.kubeflow.org/job-name={name}")["items"]
    for pod in pods:
        node = local_cluster.get("node", pod["spec"]["nodeName"])
        labels = node["metadata"]["labels"]
        assert labels["cloud.google.com/gke-accelerator"] == "nvidia-l4", pod["spec"]["nodeName"]
        assert labels["cloud.google.com/gke-spot"] == "true", pod["spec"]["nodeName"]
    jobgen(local_cluster, "delete", name, "-n", NS)


def test_oversized_gpu_request_stays_pending_with_reason(local_cluster):
    name = unique("big")
    submit(
        local_cluster, "jobs/mnist-ddp.yaml", name, "--set", "resources.gpu=8", "--set", "replicas.Worker.replicas=1"
    )

    def pending_reason():
        out = jobgen(local_cluster, "status", name, "-n", NS)
        assert out.returncode == 0, out.stderr
        row = out.stdout.splitlines()[1]
        return row if "Insufficient nvidia.com/gpu" in row else None

    row = wait_for(pending_reason, 120, f"{name} unschedulable reason")
    assert row.split()[2] == "Pending"
    assert "Unschedulable" in row
    jobgen(local_cluster, "delete", name, "-n", NS)


def test_permanent_exit_code_fails_job_and_status_says_why(local_cluster):
    name = unique("fail")
    annotations = local_cluster.pod_annotations(exit_code=1)
    sets = [
        arg
        for key, value in annotations.items()
        for arg in ("--set-string", f"podAnnotations.{key.replace('.', chr(92) + '.')}={value}")
    ]
    submit(local_cluster, "jobs/cpu-ddp.yaml", name, "--set", "restartPolicy=ExitCode", *sets)
    wait_for(lambda: condition(job(local_cluster, "pytorchjobs", name), "Failed"), 120, f"{name} Failed")
    out = jobgen(local_cluster, "status", name, "-n", NS)
    row = out.stdout.splitlines()[1]
    assert row.split()[2] == "Failed"
    reason = row.split(None, 7)[7]
    assert "PyTorchJobFailed" in reason and f"{name}-master-0: exit code 1" in reason, row


def test_server_dry_run_rejection_shows_apiserver_message(local_cluster):
    missing = unique("nope")
    out = jobgen(local_cluster, "submit", "jobs/cpu-ddp.yaml", "--set", f"namespace={missing}", "--dry-run=server")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert f'namespaces "{missing}" not found' in out.stderr


def test_server_dry_run_does_not_persist(local_cluster):
    name = unique("dry")
    out = jobgen(local_cluster, "submit", "jobs/cpu-ddp.yaml", "--set", f"name={name}", "--dry-run=server")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("(server dry run)")
    missing = local_cluster.kubectl("get", "pytorchjob", name, "-n", NS, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_submit_without_rbac_permission_is_forbidden(local_cluster, tmp_path):
    kubeconfig = local_cluster.token_kubeconfig(NS, "default", tmp_path / "sa.kubeconfig")
    out = jobgen(local_cluster, "submit", "jobs/cpu-ddp.yaml", "--set", f"name={unique('rbac')}", kubeconfig=kubeconfig)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "403 Forbidden" in out.stderr and "system:serviceaccount:training:default" in out.stderr


def test_delete_and_unknown_job(local_cluster):
    name = unique("del")
    submit(local_cluster, "jobs/cpu-ddp.yaml", name)
    out = jobgen(local_cluster, "delete", name, "-n", NS)
    assert out.returncode == 0 and out.stdout.strip() == f"pytorchjob.kubeflow.org/{name} deleted"
    wait_for(
        lambda: local_cluster.kubectl("get", "pytorchjob", name, "-n", NS, check=False).returncode != 0,
        60,
        f"{name} gone",
    )
    for args in (["status", name], ["logs", name], ["delete", name]):
        out = jobgen(local_cluster, *args, "-n", NS)
        # status also looks for a prediction Job of that name
        assert out.returncode == 2 and "no PyTorchJob" in out.stderr and f"named '{name}'" in out.stderr
