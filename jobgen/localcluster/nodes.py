"""Fake GKE node pools that kwok keeps Ready: GPU pools (on-demand and spot) and a CPU pool."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

KWOK_LABEL = ("type", "kwok")  # kwok manages nodes with this label
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
SPOT_TAINT = {"key": "cloud.google.com/gke-spot", "value": "true", "effect": "NoSchedule"}
ZONE = "us-central1-a"


@dataclass(frozen=True)
class Pool:
    name: str
    count: int
    machine_type: str
    cpu: int
    memory_gi: int
    accelerator: str | None = None
    gpus: int = 0
    spot: bool = False
    extra_labels: dict[str, str] = field(default_factory=dict)


POOLS: tuple[Pool, ...] = (
    Pool("l4-ondemand", 2, "g2-standard-48", 48, 192, "nvidia-l4", 4),
    Pool("l4-spot", 2, "g2-standard-48", 48, 192, "nvidia-l4", 4, spot=True),
    Pool("t4-ondemand", 1, "n1-standard-16", 16, 60, "nvidia-tesla-t4", 2),
    Pool("cpu", 2, "e2-standard-8", 8, 32),
)
MAX_GPUS_PER_NODE = max(p.gpus for p in POOLS)


def node_objects(pools: tuple[Pool, ...] = POOLS) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for pool in pools:
        for i in range(pool.count):
            name = f"gke-jobgen-{pool.name}-{i}"
            labels = {
                KWOK_LABEL[0]: KWOK_LABEL[1],
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node.kubernetes.io/instance-type": pool.machine_type,
                "topology.kubernetes.io/region": ZONE.rsplit("-", 1)[0],
                "topology.kubernetes.io/zone": ZONE,
                "cloud.google.com/gke-nodepool": pool.name,
                "cloud.google.com/machine-family": pool.machine_type.split("-", 1)[0],
                "cloud.google.com/gke-provisioning": "spot" if pool.spot else "standard",
                **pool.extra_labels,
            }
            taints: list[dict[str, str]] = []
            capacity = {
                "cpu": str(pool.cpu),
                "memory": f"{pool.memory_gi}Gi",
                "pods": "110",
                "ephemeral-storage": "100Gi",
            }
            if pool.accelerator:
                labels["cloud.google.com/gke-accelerator"] = pool.accelerator
                capacity["nvidia.com/gpu"] = str(pool.gpus)
                taints.append(dict(GPU_TAINT))
            if pool.spot:
                labels["cloud.google.com/gke-spot"] = "true"
                taints.append(dict(SPOT_TAINT))
            nodes.append(
                {
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": name,
                        "labels": labels,
                        "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                    },
                    "spec": {"taints": taints},
                    "status": {"capacity": capacity, "allocatable": dict(capacity)},
                }
            )
    return nodes
