"""Status summaries from job, pod and event objects as the apiserver returns them."""

from __future__ import annotations

import datetime as dt

from jobgen.kubeflow import state_of
from jobgen.status import format_age, status_table, summarize

NOW = dt.datetime(2026, 11, 22, 12, 0, 0, tzinfo=dt.UTC)


def job(conditions=(), replica_statuses=None, created="2026-11-22T11:55:00Z"):
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": "j", "namespace": "training", "creationTimestamp": created},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1}, "Worker": {"replicas": 2}}},
        "status": {"conditions": list(conditions), "replicaStatuses": replica_statuses or {}},
    }


def cond(ctype, status="True", reason="", message=""):
    return {"type": ctype, "status": status, "reason": reason, "message": message}


def pod(name, role, ready=False, scheduled=None, terminated=None):
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    if scheduled:
        conditions.append({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": scheduled})
    statuses = [{"name": "pytorch", "state": {"terminated": terminated}}] if terminated else []
    return {
        "metadata": {"name": name, "labels": {"training.kubeflow.org/replica-type": role}},
        "status": {"conditions": conditions, "containerStatuses": statuses},
    }


def test_state_precedence():
    assert state_of(job())[0] == "Pending"
    assert state_of(job([cond("Created")]))[0] == "Pending"
    assert state_of(job([cond("Created"), cond("Running")]))[0] == "Running"
    assert state_of(job([cond("Created"), cond("Running", "False"), cond("Succeeded")]))[0] == "Succeeded"
    assert state_of(job([cond("Running"), cond("Failed")]))[0] == "Failed"


def test_age():
    assert format_age("2026-11-22T11:59:30Z", NOW) == "30s"
    assert format_age("2026-11-22T11:55:00Z", NOW) == "5m"
    assert format_age("2026-11-22T09:00:00Z", NOW) == "3h"
    assert format_age("2026-11-19T12:00:00Z", NOW) == "3d"


def test_pending_reason_from_unschedulable_pod():
    pods = [pod("j-master-0", "master", scheduled="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.")]
    st = summarize(job([cond("Created")]), pods, now=NOW)
    assert st.state == "Pending"
    assert st.reason.startswith("j-master-0: Unschedulable: 0/3 nodes") and "nvidia.com/gpu" in st.reason


def test_failed_reason_with_exit_codes():
    pods = [pod("j-master-0", "master", terminated={"exitCode": 3, "reason": "Error"})]
    st = summarize(
        job([cond("Failed", reason="PyTorchJobFailed", message="Master failed")], {"Master": {"failed": 1}}),
        pods,
        now=NOW,
    )
    assert st.reason == "PyTorchJobFailed: Master failed (j-master-0: exit code 3)"
    assert [r.failed for r in st.roles] == [1, 0]


def test_ready_counts_and_table():
    pods = [
        pod("j-master-0", "master", ready=True),
        pod("j-worker-0", "worker", ready=True),
        pod("j-worker-1", "worker"),
    ]
    st = summarize(job([cond("Running")], {"Master": {"active": 1}, "Worker": {"active": 2}}), pods, now=NOW)
    assert [(r.role, r.ready, r.desired) for r in st.roles] == [("Master", 1, 1), ("Worker", 1, 2)]
    text = status_table([st])
    assert text.splitlines()[1].split()[:5] == ["j", "PyTorchJob", "Running", "Master:1/1", "Worker:1/2"]


def test_no_status_means_operator_missing():
    j = job()
    j["status"] = {}
    assert "training-operator" in summarize(j, now=NOW).reason
