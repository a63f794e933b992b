"""The environment training-operator v1.9.4 injects into replica containers.

A port of the operator's own rules (pkg/controller.v1/pytorch/{envvar,master,elastic}.go and
pkg/controller.v1/tensorflow/{tensorflow,util}.go at v1.9.4), so that jobs can run as local
processes with the same contract. tests/integration/test_operator_env.py compares it with the env
of the pods the real operator creates.

PyTorchJob, every container:
  PYTHONUNBUFFERED=1;
  with a Master: MASTER_PORT, PET_MASTER_PORT, MASTER_ADDR, PET_MASTER_ADDR (= <job>-master-0),
  WORLD_SIZE (= pods × nprocPerNode when that is a number, else pods), RANK and PET_NODE_RANK (the
  pod's rank: master 0, worker i → i+1);
  PET_NPROC_PER_NODE = nprocPerNode, which the operator defaults to "auto";
  elastic: PET_RDZV_ENDPOINT (<job>-worker-0:<port> unless rdzvHost/Port), PET_RDZV_BACKEND,
  PET_NNODES (min:max), PET_MAX_RESTARTS, PET_NPROC_PER_NODE (deprecated field), PET_RDZV_ID,
  PET_RDZV_CONF, PET_STANDALONE; otherwise PET_NNODES (= pods).
TFJob, the ``tensorflow`` container, when the job has more than one replica:
  TF_CONFIG = {"cluster": {role: ["<job>-<role>-<i>.<ns>.svc:<port>", …]}, "task": {"type", "index"},
  "environment": "cloud"}.
"""

from __future__ import annotations

import json
from typing import Any

PYTORCH_CONTAINER, PYTORCH_PORT_NAME = "pytorch", "pytorchjob-port"
TF_CONTAINER, TF_PORT_NAME = "tensorflow", "tfjob-port"


def replica_specs(manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest["spec"]
    return spec.get("pytorchReplicaSpecs") or spec.get("tfReplicaSpecs") or {}


def _port(rspec: dict[str, Any], container: str, port_name: str) -> int:
    for c in rspec["template"]["spec"]["containers"]:
        if c.get("name") == container:
            for p in c.get("ports") or []:
                if p.get("name") == port_name:
                    return int(p["containerPort"])
    raise ValueError(f"no port named {port_name!r} in container {container!r}")


def pod_name(job: str, role: str, index: int) -> str:
    return f"{job}-{role.lower()}-{index}".replace("/", "-")


def replicas(manifest: dict[str, Any]) -> list[tuple[str, int]]:
    """Every (role, index) of the job, masters/chiefs first."""
    order = {"Master": 0, "Chief": 0, "Worker": 1, "PS": 2, "Evaluator": 3}
    specs = replica_specs(manifest)
    return [(role, i) for role in sorted(specs, key=lambda r: order.get(r, 9))
            for i in range(int(specs[role].get("replicas", 1)))]


def pytorch_env(manifest: dict[str, Any], role: str, index: int) -> dict[str, str]:
    spec = manifest["spec"]
    specs = spec["pytorchReplicaSpecs"]
    name = manifest["metadata"]["name"]
    env = {"PYTHONUNBUFFERED": "1"}
    total = sum(int(r.get("replicas", 1)) for r in specs.values())
    elastic = spec.get("elasticPolicy")
    nproc = spec.get("nprocPerNode")
    if nproc is None and (elastic is None or elastic.get("nProcPerNode") is None):
        nproc = "auto"  # the operator's default (SetDefaults_PyTorchJob)
    nproc_int = int(nproc) if nproc is not None and str(nproc).lstrip("-").isdigit() else 1
    if "Master" in specs:
        port = str(_port(specs["Master"], PYTORCH_CONTAINER, PYTORCH_PORT_NAME))
        addr = pod_name(name, "Master", 0)
        rank = index + 1 if role == "Worker" else index
        env.update({"MASTER_PORT": port, "PET_MASTER_PORT": port, "MASTER_ADDR": addr, "PET_MASTER_ADDR": addr,
                    "WORLD_SIZE": str(total * nproc_int), "RANK": str(rank), "PET_NODE_RANK": str(rank)})
    if nproc is not None:
        env["PET_NPROC_PER_NODE"] = str(nproc)
    if elastic is not None:
        host = elastic.get("rdzvHost") or f"{name}-worker-0"
        port = elastic.get("rdzvPort") or _port(specs["Worker"], PYTORCH_CONTAINER, PYTORCH_PORT_NAME)
        env["PET_RDZV_ENDPOINT"] = f"{host}:{port}"
        env["PET_RDZV_BACKEND"] = elastic.get("rdzvBackend") or "c10d"
        if elastic.get("minReplicas") is None and elastic.get("maxReplicas") is None:
            env["PET_NNODES"] = str(specs["Worker"].get("replicas", 1))
        else:
            env["PET_NNODES"] = f"{elastic.get('minReplicas')}:{elastic.get('maxReplicas')}"
        if elastic.get("maxRestarts") is not None:
            env["PET_MAX_RESTARTS"] = str(elastic["maxRestarts"])
        if elastic.get("nProcPerNode") is not None:
            env["PET_NPROC_PER_NODE"] = str(elastic["nProcPerNode"])
        if elastic.get("rdzvId") is not None:
            env["PET_RDZV_ID"] = elastic["rdzvId"]
        if elastic.get("rdzvConf"):
            env["PET_RDZV_CONF"] = ",".join(f"{c['key']}={c['value']}" for c in elastic["rdzvConf"])
        if elastic.get("standalone"):
            env["PET_STANDALONE"] = ""
    else:
        env["PET_NNODES"] = str(total)
    return env


def tf_config(manifest: dict[str, Any], role: str, index: int,
              endpoints: dict[str, list[str]] | None = None) -> str | None:
    """TF_CONFIG for one replica, or None for a single-replica job (the operator sets none).

    ``endpoints`` replaces the cluster's Service addresses (local runs use 127.0.0.1 ports)."""
    specs = manifest["spec"]["tfReplicaSpecs"]
    if sum(int(r.get("replicas", 1)) for r in specs.values()) == 1:
        return None
    name, namespace = manifest["metadata"]["name"], manifest["metadata"].get("namespace", "default")
    cluster = endpoints or {
        rt.lower(): [f"{pod_name(name, rt, i)}.{namespace}.svc:{_port(rs, TF_CONTAINER, TF_PORT_NAME)}"
                     for i in range(int(rs.get("replicas", 1)))]
        for rt, rs in specs.items()
    }
    return json.dumps({"cluster": cluster, "task": {"type": role.lower(), "index": index}, "environment": "cloud"},
                      separators=(",", ":"))


def operator_env(manifest: dict[str, Any], role: str, index: int) -> dict[str, str]:
    """What the operator adds to the default container's env for replica ``role``/``index``."""
    if manifest["kind"] == "PyTorchJob":
        return pytorch_env(manifest, role, index)
    config = tf_config(manifest, role, index)
    return {"TF_CONFIG": config} if config is not None else {}
