"""TF_CONFIG, as the training-operator sets it in every TFJob replica, → rank and world size.

    {"cluster": {"chief": ["job-chief-0:2222"], "worker": ["job-worker-0:2222", "job-worker-1:2222"]},
     "task": {"type": "worker", "index": 1}, "environment": "cloud"}

MultiWorkerMirroredStrategy reads TF_CONFIG itself; this module validates it up front (a clear
error instead of a hang) and gives the trainer its data-parallel rank: the chief is rank 0 and
worker i is rank i + (number of chiefs). Without a chief, worker 0 is the chief. Parameter-server
and evaluator roles are not data-parallel replicas and are rejected. No TensorFlow import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from trainer.gcs import TrainerError

REPLICA_ROLES = ("chief", "master", "worker")


@dataclass(frozen=True)
class Task:
    type: str
    index: int
    cluster: dict[str, list[str]]
    rank: int
    world_size: int

    @property
    def is_chief(self) -> bool:
        return self.rank == 0


def parse(raw: str | None) -> Task:
    """Parse TF_CONFIG; None or empty means a single local worker."""
    if raw is None or not raw.strip():
        return Task("worker", 0, {}, 0, 1)
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise TrainerError(f"TF_CONFIG is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise TrainerError("TF_CONFIG must be a JSON object")
    cluster, task = doc.get("cluster"), doc.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise TrainerError("TF_CONFIG has no cluster")
    if not isinstance(task, dict) or "type" not in task:
        raise TrainerError("TF_CONFIG has no task type")
    for role, addrs in cluster.items():
        if not isinstance(addrs, list) or not all(isinstance(a, str) and ":" in a for a in addrs):
            raise TrainerError(f"TF_CONFIG cluster.{role} must be a list of host:port strings")
    unsupported = sorted(set(cluster) - set(REPLICA_ROLES) - {"evaluator"})
    if unsupported:
        raise TrainerError(
            f"TF_CONFIG has {', '.join(unsupported)} replicas: MultiWorkerMirroredStrategy uses only "
            "Chief and Worker replicas (use a Chief + Workers TFJob)"
        )
    ttype = str(task["type"]).lower()
    try:
        index = int(task.get("index", 0))
    except (TypeError, ValueError):
        raise TrainerError(f"TF_CONFIG task.index must be an integer, got {task.get('index')!r}") from None
    if ttype == "evaluator":
        raise TrainerError("this trainer has no evaluator role: drop the Evaluator replicas from the TFJob")
    if ttype not in cluster:
        raise TrainerError(f"TF_CONFIG task.type {ttype!r} is not in its cluster ({', '.join(sorted(cluster))})")
    if not 0 <= index < len(cluster[ttype]):
        raise TrainerError(f"TF_CONFIG task.index {index} is out of range for {len(cluster[ttype])} {ttype} replicas")
    chiefs = len(cluster.get("chief", [])) + len(cluster.get("master", []))
    if chiefs > 1:
        raise TrainerError("TF_CONFIG has more than one chief")
    workers = len(cluster.get("worker", []))
    rank = 0 if ttype in ("chief", "master") else chiefs + index
    return Task(ttype, index, {k: list(v) for k, v in cluster.items()}, rank, chiefs + workers)


def from_env(env: Mapping[str, str] | None = None) -> Task:
    return parse((os.environ if env is None else env).get("TF_CONFIG"))
