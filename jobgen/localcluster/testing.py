"""Test helpers for the local control plane: the handle the `local_cluster` pytest fixture
yields, a poller, and hand-written PyTorchJob/TFJob objects (independent of jobgen's renderer)."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobgen.kubeflow import API_VERSION, PYTORCH, TENSORFLOW
from jobgen.render import CONTAINER_SECURITY_CONTEXT, GKE_NODEPOOL, POD_SECURITY_CONTEXT, pod_placement
from jobgen.spec import Placement, Resources

from .bins import binaries
from .cluster import LocalCluster
from .pki import write_kubeconfig


@dataclass
class LocalClusterHandle:
    """What integration tests get from the `local_cluster` fixture."""

    cluster: LocalCluster
    kubeconfig: str  # admin kubeconfig (system:masters)
    context: str
    server: str
    bin_dir: str
    kubectl_path: str
    created_namespaces: list[str] = field(default_factory=list)

    def binary(self, name: str) -> str:
        """Path of a pinned binary in the cache, e.g. binary("helm") (built by `make bins`)."""
        return str(binaries().path(name))

    # --- kubectl -----------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get(self, kind: str, name: str | None = None, namespace: str | None = None, selector: str | None = None) -> Any:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)

    def apply(
        self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str, kubeconfig: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        docs = obj if isinstance(obj, list) else [obj]
        return self.kubectl(
            "apply",
            "--server-side",
            "--field-manager=jobgen-tests",
            *extra,
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
            kubeconfig=kubeconfig,
            check=check,
        )

    def create_namespace(self, prefix: str = "t", timeout: float = 90) -> str:
        """A fresh namespace whose default ServiceAccount exists (pods need it). The controller-manager
        creates it; after an apiserver restart its informers reconnect with a backoff of up to 30 s."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        self.created_namespaces.append(name)
        wait_for(
            lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
            timeout,
            f"ServiceAccount default in {name}",
        )
        return name

    def delete_created_namespaces(self) -> None:
        """Delete (without waiting) the namespaces create_namespace made."""
        if self.created_namespaces:
            self.kubectl(
                "delete", "namespace", "--wait=false", "--ignore-not-found", *self.created_namespaces, check=False
            )
            self.created_namespaces.clear()

    # --- identities --------------------------------------------------------
    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> str:
        """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
        ca = self.cluster.pki.ca_cert.read_bytes()
        write_kubeconfig(path, server=self.server, ca_pem=ca, context=self.context, user={"token": token})
        return str(path)

    # --- pod lifecycle hooks (kwok stages) -----------------------------------
    @staticmethod
    def pod_annotations(exit_code: int | None = None, run_for: str | None = None) -> dict[str, str]:
        """Pod-template annotations: every attempt exits with `exit_code` after `run_for` (e.g. "1h")."""
        return LocalCluster.pod_annotations(exit_code, run_for)

    def fail_replica(self, namespace: str, pod: str, exit_code: int, after: str = "0s") -> None:
        """Make this one live pod exit with `exit_code` (0 = succeed); a recreated pod runs normally."""
        self.cluster.fail_replica(namespace, pod, exit_code, after)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll until `check()` returns something truthy; return it. Fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


IMAGE = "python:3.11-slim"  # never pulled: kwok runs no containers


def container(name: str, gpus: int = 0, cpu: str = "500m") -> dict[str, Any]:
    res: dict[str, Any] = {"requests": {"cpu": cpu, "memory": "512Mi"}, "limits": {"memory": "512Mi"}}
    if gpus:
        res["requests"]["nvidia.com/gpu"] = gpus
        res["limits"]["nvidia.com/gpu"] = gpus
    return {
        "name": name,
        "image": IMAGE,
        "command": ["python", "-c", "print('hi')"],
        "resources": res,
        "securityContext": CONTAINER_SECURITY_CONTEXT,  # PodSecurity `restricted`, as jobgen renders
    }


def placement(
    gpus: int = 0, accelerator: str | None = None, spot: bool = False, pool: str | None = None
) -> dict[str, Any]:
    """nodeSelector + tolerations of a pod with ``gpus`` GPUs, by jobgen's own rule (render.pod_placement)."""
    selector, tolerations = pod_placement(
        Placement(accelerator=accelerator, spot=spot, node_selector={GKE_NODEPOOL: pool} if pool else {}),
        Resources(gpu=gpus),
    )
    out: dict[str, Any] = {}
    if selector:
        out["nodeSelector"] = selector
    if tolerations:
        out["tolerations"] = tolerations
    return out


def replica(
    cname: str,
    replicas: int,
    *,
    gpus: int = 0,
    restart: str = "OnFailure",
    annotations: dict[str, str] | None = None,
    **place: Any,
) -> dict[str, Any]:
    template: dict[str, Any] = {
        "spec": {
            "securityContext": POD_SECURITY_CONTEXT,
            "containers": [container(cname, gpus)],
            **placement(gpus, **place),
        }
    }
    if annotations:
        template["metadata"] = {"annotations": annotations}
    return {"replicas": replicas, "restartPolicy": restart, "template": template}


def pytorchjob(
    name: str,
    namespace: str,
    workers: int = 1,
    *,
    gpus: int = 0,
    restart: str = "OnFailure",
    worker_annotations: dict[str, str] | None = None,
    master_annotations: dict[str, str] | None = None,
    backoff_limit: int | None = None,
    **place: Any,
) -> dict[str, Any]:
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None"}
    if backoff_limit is not None:
        run_policy["backoffLimit"] = backoff_limit
    specs = {
        "Master": replica(PYTORCH.container, 1, gpus=gpus, restart=restart, annotations=master_annotations, **place)
    }
    if workers:
        specs["Worker"] = replica(
            PYTORCH.container, workers, gpus=gpus, restart=restart, annotations=worker_annotations, **place
        )
    return {
        "apiVersion": API_VERSION,
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runPolicy": run_policy, "pytorchReplicaSpecs": specs},
    }


def tfjob(name: str, namespace: str, workers: int = 2, ps: int = 1, **place: Any) -> dict[str, Any]:
    specs = {
        "Chief": replica(TENSORFLOW.container, 1, **place),
        "Worker": replica(TENSORFLOW.container, workers, **place),
    }
    if ps:
        specs["PS"] = replica(TENSORFLOW.container, ps, **place)
    return {
        "apiVersion": API_VERSION,
        "kind": "TFJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"runPolicy": {"cleanPodPolicy": "None"}, "tfReplicaSpecs": specs},
    }


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    conditions: list[dict[str, Any]] = job.get("status", {}).get("conditions", []) or []
    for c in conditions:
        if c.get("type") == ctype and c.get("status") == "True":
            return c
    return None


def env_of(pod: dict[str, Any], container_name: str) -> dict[str, str]:
    for c in pod["spec"]["containers"]:
        if c["name"] == container_name:
            return {e["name"]: e.get("value", "") for e in c.get("env", [])}
    raise AssertionError(f"pod {pod['metadata']['name']} has no container {container_name}")
