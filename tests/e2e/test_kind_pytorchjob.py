"""On kind, the in-cluster training-operator (manifests/) runs a CPU PyTorchJob with the trainer
image to completion: two pods rendezvous over the operator's env contract with torch.distributed."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import yaml

pytestmark = pytest.mark.e2e

# Every pod joins one gloo process group through MASTER_ADDR/MASTER_PORT/WORLD_SIZE/RANK and
# all-reduces its rank: the sum proves the pods really talked to each other.
SCRIPT = """
import os, torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([dist.get_rank()], dtype=torch.float32)
dist.all_reduce(t)
n = dist.get_world_size()
assert t.item() == n * (n - 1) / 2, t
print("rank", dist.get_rank(), "of", n, "allreduce ok", flush=True)
dist.destroy_process_group()
"""


def test_cpu_pytorchjob_runs_to_completion(kind_cluster: str, trainer_image: str, kubectl_path: str) -> None:
    def _kubectl(context: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [kubectl_path, f"--context={context}", *args], input=input, capture_output=True, text=True, timeout=120
        )

    ns = f"e2e-{uuid.uuid4().hex[:6]}"
    assert _kubectl(kind_cluster, "create", "namespace", ns).returncode == 0

    def replica(n: int) -> dict:
        return {
            "replicas": n,
            "restartPolicy": "OnFailure",
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "pytorch",
                            "image": trainer_image,
                            "imagePullPolicy": "IfNotPresent",
                            "command": ["python", "-c", SCRIPT],
                            "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                        }
                    ]
                }
            },
        }

    job = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "e2e-ddp", "namespace": ns},
        "spec": {
            "runPolicy": {"cleanPodPolicy": "None"},
            "pytorchReplicaSpecs": {"Master": replica(1), "Worker": replica(1)},
        },
    }
    try:
        applied = _kubectl(kind_cluster, "apply", "--server-side", "-f", "-", input=yaml.safe_dump(job))
        assert applied.returncode == 0, applied.stderr
        deadline = time.monotonic() + 600
        state = ""
        while time.monotonic() < deadline:
            out = _kubectl(kind_cluster, "get", "pytorchjob", "e2e-ddp", "-n", ns, "-o", "json")
            conds = {
                c["type"]: c
                for c in json.loads(out.stdout).get("status", {}).get("conditions", [])
                if c["status"] == "True"
            }
            if "Succeeded" in conds or "Failed" in conds:
                state = "Succeeded" if "Succeeded" in conds else "Failed"
                break
            time.sleep(3)
        logs = _kubectl(kind_cluster, "logs", "e2e-ddp-master-0", "-n", ns).stdout
        assert state == "Succeeded", f"job ended {state or 'not at all'}; master log:\n{logs}"
        assert "allreduce ok" in logs
    finally:
        _kubectl(kind_cluster, "delete", "namespace", ns, "--wait=false")
