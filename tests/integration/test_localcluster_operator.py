"""The real training-operator v1.9.4 on the local control plane: pods, Services, env contract,
placement on fake GKE GPU nodes, restart policy ExitCode, Pending when nothing fits."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobgen.localcluster import MAX_GPUS_PER_NODE
from jobgen.localcluster.testing import LocalClusterHandle, condition, env_of, pytorchjob, tfjob, wait_for

pytestmark = pytest.mark.integration

JOB_LABEL = "training.kubeflow.org/job-name"


def pods_of(lc: LocalClusterHandle, ns: str, job: str) -> list[dict[str, Any]]:
    return lc.get("pods", namespace=ns, selector=f"{JOB_LABEL}={job}")["items"]


def pod_named(lc: LocalClusterHandle, ns: str, name: str) -> dict[str, Any] | None:
    proc = lc.kubectl("get", "pod", name, "-n", ns, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wait_condition(lc: LocalClusterHandle, kind: str, ns: str, name: str, ctype: str, timeout: float = 60) -> dict:
    def check() -> dict | None:
        return condition(lc.get(kind, name, ns), ctype)

    return wait_for(check, timeout, f"{kind} {ns}/{name} condition {ctype}")


def node_pool(lc: LocalClusterHandle, node: str) -> dict[str, str]:
    return lc.get("node", node)["metadata"]["labels"]


def test_pytorchjob_pods_services_env_and_success(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("pt")
    job = pytorchjob(
        "mnist",
        ns,
        workers=2,
        pool="cpu",
        worker_annotations=lc.pod_annotations(run_for="3s"),
        master_annotations=lc.pod_annotations(run_for="3s"),
    )
    lc.apply(job)

    pods = wait_for(lambda: (p := pods_of(lc, ns, "mnist")) and len(p) == 3 and p, 60, "3 pods")
    by_name = {p["metadata"]["name"]: p for p in pods}
    assert set(by_name) == {"mnist-master-0", "mnist-worker-0", "mnist-worker-1"}
    for name, rank in (("mnist-master-0", "0"), ("mnist-worker-0", "1"), ("mnist-worker-1", "2")):
        env = env_of(by_name[name], "pytorch")
        assert env["MASTER_ADDR"] == "mnist-master-0", env
        assert env["MASTER_PORT"] == "23456", env
        assert env["WORLD_SIZE"] == "3", env
        assert env["RANK"] == rank, env
        assert env["PET_MASTER_ADDR"] == "mnist-master-0", env
        assert env["PET_MASTER_PORT"] == "23456", env
        assert env["PET_NNODES"] == "3", env
        assert env["PET_NODE_RANK"] == rank, env

    services = {s["metadata"]["name"]: s for s in lc.get("services", namespace=ns)["items"]}
    assert set(services) >= {"mnist-master-0", "mnist-worker-0", "mnist-worker-1"}
    for name in ("mnist-master-0", "mnist-worker-0", "mnist-worker-1"):
        assert services[name]["spec"]["clusterIP"] == "None", f"{name} is not headless"

    wait_condition(lc, "pytorchjob", ns, "mnist", "Succeeded")
    for p in pods_of(lc, ns, "mnist"):
        assert p["status"]["phase"] == "Succeeded"
        assert node_pool(lc, p["spec"]["nodeName"])["cloud.google.com/gke-nodepool"] == "cpu"
    listing = lc.kubectl("get", "pytorchjobs", "-n", ns).stdout
    assert "mnist" in listing and "Succeeded" in listing, listing


def test_tfjob_tf_config(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("tf")
    lc.apply(tfjob("dist", ns, workers=2, ps=1, pool="cpu"))
    pods = wait_for(lambda: (p := pods_of(lc, ns, "dist")) and len(p) == 4 and p, 60, "4 TFJob pods")
    seen = set()
    for p in pods:
        cfg = json.loads(env_of(p, "tensorflow")["TF_CONFIG"])
        assert cfg["cluster"]["chief"] == [f"dist-chief-0.{ns}.svc:2222"], cfg
        assert cfg["cluster"]["worker"] == [f"dist-worker-{i}.{ns}.svc:2222" for i in range(2)], cfg
        assert cfg["cluster"]["ps"] == [f"dist-ps-0.{ns}.svc:2222"], cfg
        task = cfg["task"]
        assert p["metadata"]["name"] == f"dist-{task['type']}-{task['index']}"
        seen.add((task["type"], task["index"]))
    assert seen == {("chief", 0), ("worker", 0), ("worker", 1), ("ps", 0)}
    wait_condition(lc, "tfjob", ns, "dist", "Succeeded")


@pytest.mark.parametrize(
    ("accelerator", "spot", "pool"),
    [("nvidia-l4", False, "l4-ondemand"), ("nvidia-l4", True, "l4-spot"), ("nvidia-tesla-t4", False, "t4-ondemand")],
)
def test_gpu_pods_land_on_matching_nodes(
    local_cluster: LocalClusterHandle, accelerator: str, spot: bool, pool: str
) -> None:
    lc = local_cluster
    ns = lc.create_namespace("gpu")
    lc.apply(pytorchjob("gpu", ns, workers=1, gpus=1, accelerator=accelerator, spot=spot))
    wait_condition(lc, "pytorchjob", ns, "gpu", "Succeeded")
    pods = pods_of(lc, ns, "gpu")
    assert len(pods) == 2
    for p in pods:
        labels = node_pool(lc, p["spec"]["nodeName"])
        assert labels["cloud.google.com/gke-accelerator"] == accelerator
        assert labels["cloud.google.com/gke-nodepool"] == pool
        assert labels.get("cloud.google.com/gke-spot") == ("true" if spot else None)


def test_cpu_pods_never_land_on_gpu_nodes(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("cpu")
    lc.apply(pytorchjob("plain", ns, workers=3))  # no selector: only the taints keep it off GPU/spot nodes
    wait_condition(lc, "pytorchjob", ns, "plain", "Succeeded")
    for p in pods_of(lc, ns, "plain"):
        labels = node_pool(lc, p["spec"]["nodeName"])
        assert "cloud.google.com/gke-accelerator" not in labels, p["spec"]["nodeName"]


def test_too_many_gpus_stays_pending(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("big")
    lc.apply(pytorchjob("huge", ns, workers=0, gpus=MAX_GPUS_PER_NODE + 1, accelerator="nvidia-l4"))

    def unschedulable() -> dict | None:
        pod = pod_named(lc, ns, "huge-master-0")
        if not pod:
            return None
        for c in pod.get("status", {}).get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable":
                return c
        return None

    cond = wait_for(unschedulable, 60, "PodScheduled=False/Unschedulable")
    assert "Insufficient nvidia.com/gpu" in cond["message"], cond["message"]
    pod = pod_named(lc, ns, "huge-master-0")
    assert pod is not None and pod["status"]["phase"] == "Pending" and not pod["spec"].get("nodeName")
    job = lc.get("pytorchjob", "huge", ns)
    assert condition(job, "Running") is None and condition(job, "Succeeded") is None


def test_exit_code_permanent_failure_fails_job(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("perm")
    lc.apply(
        pytorchjob(
            "bad",
            ns,
            workers=1,
            restart="ExitCode",
            pool="cpu",
            worker_annotations=lc.pod_annotations(exit_code=2),
            master_annotations=lc.pod_annotations(run_for="1h"),
        )
    )
    failed = wait_condition(lc, "pytorchjob", ns, "bad", "Failed")
    assert "Worker" in failed["message"] or "worker" in failed["message"], failed
    worker = pod_named(lc, ns, "bad-worker-0")
    assert worker is not None
    term = worker["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 2


def test_exit_code_retryable_failure_restarts_replica(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("retry")
    hold = lc.pod_annotations(run_for="1h")
    lc.apply(
        pytorchjob(
            "flaky", ns, workers=1, restart="ExitCode", pool="cpu", worker_annotations=hold, master_annotations=hold
        )
    )
    wait_condition(lc, "pytorchjob", ns, "flaky", "Running")
    first = wait_for(
        lambda: (p := pod_named(lc, ns, "flaky-worker-0")) and p["status"].get("phase") == "Running" and p,
        60,
        "worker Running",
    )
    first_uid = first["metadata"]["uid"]

    lc.fail_replica(ns, "flaky-worker-0", 137)  # SIGKILL-like: retryable under ExitCode
    second = wait_for(
        lambda: (p := pod_named(lc, ns, "flaky-worker-0"))
        and p["metadata"]["uid"] != first_uid
        and p["status"].get("phase") == "Running"
        and p,
        60,
        "recreated worker Running",
    )
    # the Restarting condition is transient (Running replaces it); the operator's events stay
    reasons = wait_for(
        lambda: {e["reason"] for e in lc.get("events", namespace=ns)["items"] if e["involvedObject"]["name"] == "flaky"}
        >= {"PyTorchJobRestarting"}
        and {e["reason"]: e["message"] for e in lc.get("events", namespace=ns)["items"]},
        30,
        "PyTorchJobRestarting event",
    )
    assert "exited with code 137" in reasons["ExitedWithCode"], reasons
    job = lc.get("pytorchjob", "flaky", ns)
    assert condition(job, "Failed") is None

    # the new attempt and the master finish cleanly: the job succeeds
    lc.fail_replica(ns, second["metadata"]["name"], 0)
    lc.fail_replica(ns, "flaky-master-0", 0)
    wait_condition(lc, "pytorchjob", ns, "flaky", "Succeeded")
