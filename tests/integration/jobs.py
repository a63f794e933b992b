"""Hand-written PyTorchJob/TFJob objects for the local-cluster tests (independent of jobgen)."""

from __future__ import annotations

from typing import Any

IMAGE = "python:3.11-slim"  # never pulled: kwok runs no containers


def container(name: str, gpus: int = 0, cpu: str = "500m") -> dict[str, Any]:
    res: dict[str, Any] = {"requests": {"cpu": cpu, "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    if gpus:
        res["requests"]["nvidia.com/gpu"] = gpus
        res["limits"]["nvidia.com/gpu"] = gpus
    return {"name": name, "image": IMAGE, "command": ["python", "-c", "print('hi')"], "resources": res}


def placement(accelerator: str | None = None, spot: bool = False, pool: str | None = None) -> dict[str, Any]:
    """nodeSelector + tolerations as jobgen renders them for GKE."""
    selector: dict[str, str] = {}
    tolerations: list[dict[str, str]] = []
    if accelerator:
        selector["cloud.google.com/gke-accelerator"] = accelerator
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    if spot:
        selector["cloud.google.com/gke-spot"] = "true"
        tolerations.append({"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true",
                            "effect": "NoSchedule"})
    if pool:
        selector["cloud.google.com/gke-nodepool"] = pool
    out: dict[str, Any] = {}
    if selector:
        out["nodeSelector"] = selector
    if tolerations:
        out["tolerations"] = tolerations
    return out


def replica(cname: str, replicas: int, *, gpus: int = 0, restart: str = "OnFailure",
            annotations: dict[str, str] | None = None, **place: Any) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": {"containers": [container(cname, gpus)], **placement(**place)}}
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return {"replicas": replicas, "restartPolicy": restart, "template": template}


def pytorchjob(name: str, namespace: str, workers: int = 1, *, gpus: int = 0, restart: str = "OnFailure",
               worker_annotations: dict[str, str] | None = None, master_annotations: dict[str, str] | None = None,
               backoff_limit: int | None = None, **place: Any) -> dict[str, Any]:
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None"}
    if backoff_limit is not None:
        run_policy["backoffLimit"] = backoff_limit
    specs = {"Master": replica("pytorch", 1, gpus=gpus, restart=restart, annotations=master_annotations, **place)}
    if workers:
        specs["Worker"] = replica("pytorch", workers, gpus=gpus, restart=restart,
                                  annotations=worker_annotations, **place)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": specs},
    }


def tfjob(name: str, namespace: str, workers: int = 2, ps: int = 1, **place: Any) -> dict[str, Any]:
    specs = {
        "Chief": replica("tensorflow", 1, **place),
        "Worker": replica("tensorflow", workers, **place),
    }
    if ps:
        specs["PS"] = replica("tensorflow", ps, **place)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "tfReplicaSpecs": specs},
    }


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in job.get("status", {}).get("conditions", []) or []:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def env_of(pod: dict[str, Any], container_name: str) -> dict[str, str]:
    for c in pod["spec"]["containers"]:
        if c["name"] == container_name:
            return {e["name"]: e.get("value", "") for e in c.get("env", [])}
    raise AssertionError(f"pod {pod['metadata']['name']} has no container {container_name}")
