"""The training-operator v1 contract (kubeflow.org/v1, operator v1.9.4), in one place.

Everything jobgen knows about PyTorchJob and TFJob objects lives here: the kinds and their replica
fields, container and port names, role order, the names of child pods and Services, the env the
operator injects into each replica, and the job state read from its conditions. Callers take a
:class:`TrainingJob` view of a manifest or a stored object and ask it; nothing else parses
``pytorchReplicaSpecs`` or derives ``<job>-<role>-<index>``.

The env rules are a port of pkg/controller.v1/pytorch/{envvar,master,elastic}.go and
pkg/controller.v1/tensorflow/{tensorflow,util}.go at v1.9.4, so jobs can run as local processes
with the same contract; tests/integration/test_operator_env.py compares them with the env of the
pods the real operator creates.

PyTorchJob, every container:
  PYTHONUNBUFFERED=1;
  with a Master: MASTER_PORT, PET_MASTER_PORT, MASTER_ADDR, PET_MASTER_ADDR (= <job>-master-0),
  WORLD_SIZE (= pods x nprocPerNode when that is a number, else pods), RANK and PET_NODE_RANK (the
  pod's rank: master 0, worker i -> i+1);
  PET_NPROC_PER_NODE = nprocPerNode, which the operator defaults to "auto";
  elastic: PET_RDZV_ENDPOINT (<job>-worker-0:<port> unless rdzvHost/Port), PET_RDZV_BACKEND,
  PET_NNODES (min:max), PET_MAX_RESTARTS, PET_NPROC_PER_NODE (deprecated field), PET_RDZV_ID,
  PET_RDZV_CONF, PET_STANDALONE; otherwise PET_NNODES (= pods).
TFJob, the ``tensorflow`` container, when the job has more than one replica:
  TF_CONFIG = {"cluster": {role: ["<job>-<role>-<i>.<ns>.svc:<port>", ...]}, "task": {"type", "index"},
  "environment": "cloud"}.

A Trainer v2 ``TrainJob`` view can be added beside :class:`TrainingJob` by implementing
:class:`JobView`; callers go through :func:`view`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

GROUP = "kubeflow.org"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
# Set by jobgen's templates on every replica container (not by the operator): the trainer reads
# the job's name and kind from these instead of parsing its pod name.
JOB_NAME_ENV = "JOB_NAME"
JOB_KIND_ENV = "JOB_KIND"
TERMINAL_STATES = ("Succeeded", "Failed")
_STATE_PRECEDENCE = ("Failed", "Succeeded", "Suspended", "Restarting", "Running", "Created")


@dataclass(frozen=True)
class JobKind:
    """The fixed facts of one training-operator kind."""

    kind: str
    replica_field: str
    container: str
    port_name: str
    default_port: int
    roles: tuple[str, ...]  # in the order replicas are listed and started
    primary_roles: tuple[str, ...]  # the replica whose logs and address stand for the job

    def role_rank(self, role: str) -> int:
        return self.roles.index(role) if role in self.roles else len(self.roles)


PYTORCH = JobKind(
    "PyTorchJob", "pytorchReplicaSpecs", "pytorch", "pytorchjob-port", 23456, ("Master", "Worker"), ("Master", "Worker")
)
TENSORFLOW = JobKind(
    "TFJob",
    "tfReplicaSpecs",
    "tensorflow",
    "tfjob-port",
    2222,
    ("Chief", "Master", "Worker", "PS", "Evaluator"),
    ("Chief", "Master", "Worker"),
)
KINDS: dict[str, JobKind] = {k.kind: k for k in (PYTORCH, TENSORFLOW)}


def job_kind(kind: Any) -> JobKind:
    """The :class:`JobKind` named ``kind``; ValueError names the supported kinds otherwise."""
    if isinstance(kind, str) and kind in KINDS:
        return KINDS[kind]
    raise ValueError(f"expected one of {', '.join(KINDS)}, got {kind!r}")


def child_name(job: str, role: str, index: int) -> str:
    """The pod and Service name the operator gives replica ``role``/``index`` of ``job``."""
    return f"{job}-{role.lower()}-{index}".replace("/", "-")


def state_of(obj: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The job's current state and the condition that says so (Pending when it has none)."""
    conditions = [c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    for wanted in _STATE_PRECEDENCE:
        for cond in reversed(conditions):
            if cond.get("type") == wanted:
                return ("Pending" if wanted == "Created" else wanted), cond
    return "Pending", None


class JobView(Protocol):
    """What callers may ask of any training job object."""

    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def kind(self) -> JobKind: ...
    def replicas(self) -> list[tuple[str, int]]: ...
    def pod_name(self, role: str, index: int) -> str: ...
    def state(self) -> tuple[str, dict[str, Any] | None]: ...


class TrainingJob:
    """A typed, read-only view of a PyTorchJob or TFJob manifest (or an object read back)."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        self.kind = job_kind(obj.get("kind"))

    # --- identity ---------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = self.obj.get("metadata") or {}
        return meta

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", ""))

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.obj.get("spec") or {}
        return spec

    # --- replicas ---------------------------------------------------------------------------
    @property
    def replica_specs(self) -> dict[str, Any]:
        specs = self.spec.get(self.kind.replica_field) or {}
        return specs if isinstance(specs, dict) else {}

    def roles(self) -> list[str]:
        """The job's replica types, in the kind's order (Master/Chief first)."""
        return sorted(self.replica_specs, key=self.kind.role_rank)

    def replica_count(self, role: str) -> int:
        return int((self.replica_specs.get(role) or {}).get("replicas", 1))

    def total_replicas(self) -> int:
        return sum(self.replica_count(r) for r in self.replica_specs)

    def replicas(self) -> list[tuple[str, int]]:
        """Every (role, index) of the job, masters/chiefs first."""
        return [(role, i) for role in self.roles() for i in range(self.replica_count(role))]

    def primary_replica(self) -> tuple[str, int]:
        """The replica that stands for the job (master-0, chief-0, else worker-0)."""
        roles = self.roles()
        role = next((r for r in self.kind.primary_roles if r in roles), roles[0] if roles else "Worker")
        return role, 0

    def find_replica(self, text: str) -> tuple[str, int] | None:
        """Parse ``worker-1`` (any case) into a (role, index) of this job, or None."""
        role_text, _, index = text.rpartition("-")
        role = next((r for r in self.replica_specs if r.lower() == role_text.lower()), None)
        if role is None or not index.isdigit() or int(index) >= self.replica_count(role):
            return None
        return role, int(index)

    def pod_name(self, role: str, index: int) -> str:
        return child_name(self.name, role, index)

    def service_name(self, role: str, index: int) -> str:
        return child_name(self.name, role, index)

    # --- containers -------------------------------------------------------------------------
    def containers(self, role: str) -> list[dict[str, Any]]:
        template = (self.replica_specs.get(role) or {}).get("template") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        return [c for c in containers if isinstance(c, dict)]

    def container(self, role: str) -> dict[str, Any]:
        """The operator's default container of ``role`` (named ``pytorch``/``tensorflow``)."""
        for c in self.containers(role):
            if c.get("name") == self.kind.container:
                return c
        raise ValueError(f"{self.kind.kind} {self.name}: {role} has no container named {self.kind.container!r}")

    def port(self, role: str) -> int:
        for p in self.container(role).get("ports") or []:
            if p.get("name") == self.kind.port_name:
                return int(p["containerPort"])
        raise ValueError(f"no port named {self.kind.port_name!r} in container {self.kind.container!r}")

    # --- the operator's env -----------------------------------------------------------------
    def operator_env(self, role: str, index: int) -> dict[str, str]:
        """What the operator adds to the default container's env for replica ``role``/``index``."""
        if self.kind is PYTORCH:
            return self._pytorch_env(role, index)
        config = self.tf_config(role, index)
        return {"TF_CONFIG": config} if config is not None else {}

    def _pytorch_env(self, role: str, index: int) -> dict[str, str]:
        spec, specs = self.spec, self.replica_specs
        env = {"PYTHONUNBUFFERED": "1"}
        total = self.total_replicas()
        elastic = spec.get("elasticPolicy")
        nproc = spec.get("nprocPerNode")
        if nproc is None and (elastic is None or elastic.get("nProcPerNode") is None):
            nproc = "auto"  # the operator's default (SetDefaults_PyTorchJob)
        nproc_int = int(nproc) if nproc is not None and str(nproc).lstrip("-").isdigit() else 1
        if "Master" in specs:
            port = str(self.port("Master"))
            addr = self.service_name("Master", 0)
            rank = index + 1 if role == "Worker" else index
            env.update(
                {
                    "MASTER_PORT": port,
                    "PET_MASTER_PORT": port,
                    "MASTER_ADDR": addr,
                    "PET_MASTER_ADDR": addr,
                    "WORLD_SIZE": str(total * nproc_int),
                    "RANK": str(rank),
                    "PET_NODE_RANK": str(rank),
                }
            )
        if nproc is not None:
            env["PET_NPROC_PER_NODE"] = str(nproc)
        if elastic is None:
            env["PET_NNODES"] = str(total)
            return env
        host = elastic.get("rdzvHost") or self.service_name("Worker", 0)
        port_ = elastic.get("rdzvPort") or self.port("Worker")
        env["PET_RDZV_ENDPOINT"] = f"{host}:{port_}"
        env["PET_RDZV_BACKEND"] = elastic.get("rdzvBackend") or "c10d"
        if elastic.get("minReplicas") is None and elastic.get("maxReplicas") is None:
            env["PET_NNODES"] = str(self.replica_count("Worker"))
        else:
            env["PET_NNODES"] = f"{elastic.get('minReplicas')}:{elastic.get('maxReplicas')}"
        optional = {"maxRestarts": "PET_MAX_RESTARTS", "nProcPerNode": "PET_NPROC_PER_NODE", "rdzvId": "PET_RDZV_ID"}
        for key, var in optional.items():
            if elastic.get(key) is not None:
                env[var] = str(elastic[key])
        if elastic.get("rdzvConf"):
            env["PET_RDZV_CONF"] = ",".join(f"{c['key']}={c['value']}" for c in elastic["rdzvConf"])
        if elastic.get("standalone"):
            env["PET_STANDALONE"] = ""
        return env

    def tf_config(self, role: str, index: int, endpoints: dict[str, list[str]] | None = None) -> str | None:
        """TF_CONFIG for one replica, or None for a single-replica job (the operator sets none).

        ``endpoints`` replaces the cluster's Service addresses (local runs use 127.0.0.1 ports)."""
        if self.total_replicas() == 1:
            return None
        cluster = endpoints or {
            rt.lower(): [
                f"{self.service_name(rt, i)}.{self.namespace}.svc:{self.port(rt)}"
                for i in range(self.replica_count(rt))
            ]
            for rt in self.replica_specs
        }
        return json.dumps(
            {"cluster": cluster, "task": {"type": role.lower(), "index": index}, "environment": "cloud"},
            separators=(",", ":"),
        )

    # --- state ------------------------------------------------------------------------------
    def state(self) -> tuple[str, dict[str, Any] | None]:
        return state_of(self.obj)

    def finished(self) -> bool:
        return self.state()[0] in TERMINAL_STATES


def view(obj: dict[str, Any]) -> TrainingJob:
    """The typed view of a training job object (ValueError for kinds this module does not own)."""
    return TrainingJob(obj)
