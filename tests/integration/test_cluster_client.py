"""jobgen.kube.Cluster, the one cluster client, against the real local apiserver."""

from __future__ import annotations

import socket
import time

import pytest

from jobgen import kube, kubeflow
from jobgen.errors import ClusterError
from jobgen.kube import ApiRejected, is_conflict
from jobgen.localcluster.testing import LocalClusterHandle, pytorchjob, wait_for

pytestmark = pytest.mark.integration


def configmap(name: str, ns: str, data: dict[str, str] | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data or {}}


def test_objects_crud_and_optimistic_concurrency(local_cluster: LocalClusterHandle) -> None:
    ns = local_cluster.create_namespace("client")
    c = kube.connect(None, local_cluster.kubeconfig)
    created = c.create(configmap("state", ns, {"a": "1"}))
    with pytest.raises(ApiRejected) as info:
        c.create(configmap("state", ns))
    assert is_conflict(info.value) and info.value.reason == "AlreadyExists"
    got = c.get("v1", "ConfigMap", "state", ns)
    assert got is not None and got["data"] == {"a": "1"}
    got["data"]["a"] = "2"
    c.replace(got)
    stale = {**created, "data": {"a": "3"}}  # the resourceVersion of the first read: a concurrent writer won
    with pytest.raises(ApiRejected) as info:
        c.replace(stale)
    assert is_conflict(info.value)
    c.patch("v1", "ConfigMap", "state", ns, {"metadata": {"annotations": {"x": "y"}}})
    assert c.get("v1", "ConfigMap", "state", ns)["metadata"]["annotations"] == {"x": "y"}
    assert [o["metadata"]["name"] for o in c.list_objects("v1", "ConfigMap", ns) if o["metadata"]["name"] == "state"]
    assert c.delete("v1", "ConfigMap", "state", ns) is True
    assert c.delete("v1", "ConfigMap", "state", ns) is False
    assert c.get("v1", "ConfigMap", "state", ns) is None


def test_jobs_apply_events_wait_and_uid_guarded_delete(local_cluster: LocalClusterHandle) -> None:
    ns = local_cluster.create_namespace("client")
    c = kube.connect(None, local_cluster.kubeconfig)
    manifest = pytorchjob("cj", ns, workers=1)
    applied = c.apply(manifest)
    assert applied["metadata"]["managedFields"][0]["manager"] == kube.FIELD_MANAGER
    assert c.apply(manifest, dry_run=True)["metadata"]["name"] == "cj"
    job = c.wait_job("cj", ns, timeout=120, until=("Running", "Succeeded"))
    assert kubeflow.view(job).state()[0] in ("Running", "Succeeded")
    assert [j["metadata"]["name"] for j in c.list_jobs(ns)] == ["cj"]
    pods = wait_for(lambda: len(c.job_pods("cj", ns)) == 2 and c.job_pods("cj", ns), 60, "pods of cj")
    assert {p["metadata"]["name"] for p in pods} == {"cj-master-0", "cj-worker-0"}
    c.emit_event(job, "Tested", "an event from the client", component="jobgen-test")
    assert any(e["reason"] == "Tested" for e in c.events("cj", ns))
    with pytest.raises(ApiRejected) as info:  # a uid precondition protects a newer incarnation
        c.delete_job("PyTorchJob", "cj", ns, uid="00000000-0000-0000-0000-000000000000")
    assert info.value.status == 409
    assert c.delete_job("PyTorchJob", "cj", ns, uid=job["metadata"]["uid"]) is True
    assert c.get_job("missing", ns) is None


def test_unreachable_apiserver_is_transient_then_one_clear_error(local_cluster: LocalClusterHandle) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = kube.connect(None, local_cluster.kubeconfig, retry_seconds=1.0)
    c.host = f"https://127.0.0.1:{port}"
    c.api.configuration.host = c.host
    started = time.monotonic()
    with pytest.raises(ClusterError, match="cannot reach the cluster"):
        c.get("v1", "ConfigMap", "x", "default")
    assert time.monotonic() - started >= 1.0  # retried for its budget, then gave up


def test_permanent_rejection_is_not_retried(local_cluster: LocalClusterHandle) -> None:
    ns = local_cluster.create_namespace("client")
    c = kube.connect(None, local_cluster.kubeconfig, retry_seconds=30.0)
    bad = pytorchjob("bad", ns)
    bad["spec"]["unknownField"] = 1
    started = time.monotonic()
    with pytest.raises(ApiRejected) as info:
        c.apply(bad)
    assert "unknownField" in str(info.value) and not kube.is_transient(info.value)
    assert time.monotonic() - started < 10


def test_watch_streams_added_objects(local_cluster: LocalClusterHandle) -> None:
    ns = local_cluster.create_namespace("client")
    c = kube.connect(None, local_cluster.kubeconfig)
    c.create(configmap("seen", ns))
    events = list(c.watch("v1", "ConfigMap", ns, timeout_seconds=2))
    assert ("ADDED", "seen") in [(kind, obj["metadata"]["name"]) for kind, obj in events]
