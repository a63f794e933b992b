"""The job spec: a short YAML document that describes one training job.

The pydantic model here is the single source of truth: `docs/jobspec.md` documents it and
`jobgen/schema/jobspec.schema.json` is generated from it (`make schema`).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from jobgen import names
from jobgen.errors import FieldError
from jobgen.names import DNS1035_MAX, is_dns1035, is_dns1123_label, max_job_name_len
from jobgen.uris import parse_gs

API_VERSION = "jobgen/v1"

ROLES: dict[str, tuple[str, ...]] = {
    "PyTorchJob": ("Master", "Worker"),
    "TFJob": ("Chief", "Worker", "PS", "Evaluator"),
}

# Kubernetes resource.Quantity, as in k8s.io/apimachinery/pkg/api/resource.
_QUANTITY = re.compile(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ACCELERATOR = re.compile(r"^nvidia-[a-z0-9-]+$")
# Hyperparameters that declare no bound get this one, so a number's magnitude is always bounded.
DEFAULT_NUMBER_BOUND = 10**9
STRING_PARAM_MAX = 4096


class _Model(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        allow_inf_nan=False,
    )


def _quantity(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a Kubernetes quantity such as 4, 500m, 16Gi")
    text = str(value)
    if not _QUANTITY.fullmatch(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity; expected e.g. 4, 500m, 16Gi")
    return text


def _gs_uri(value: str | None) -> str | None:
    if value is not None:
        parse_gs(value)
    return value


def _string_map(kind: str, value: dict[str, str], values_are_labels: bool) -> dict[str, str]:
    for key, val in value.items():
        problem = names.qualified_name_problem(key) or (names.label_value_problem(val) if values_are_labels else None)
        if problem:
            raise ValueError(f"{kind} {problem}")
    problem = None if values_are_labels else names.annotations_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _check(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


def valid_labels(v: dict[str, str]) -> dict[str, str]:
    return _string_map("label", v, values_are_labels=True)


def valid_annotations(v: dict[str, str]) -> dict[str, str]:
    return _string_map("annotation", v, values_are_labels=False)


def valid_env(v: dict[str, Any]) -> dict[str, Any]:
    for key in v:
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"env name {key!r} is not valid; expected [A-Za-z_][A-Za-z0-9_]*")
    return v


def valid_dns1123_label(v: str | None) -> str | None:
    if v is not None and not is_dns1123_label(v):
        raise ValueError(f"{v!r} is not valid; expected a DNS-1123 label (lower-case alphanumerics and '-', ≤ 63)")
    return v


def valid_image(value: str | None) -> str | None:
    if value is not None:
        _check(names.image_problem(value))
    return value


Quantity = Annotated[
    str,
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": _QUANTITY.pattern}, {"type": "number", "minimum": 0}]}),
]
ScalarValue = StrictStr | StrictInt | StrictFloat | StrictBool


class Resources(_Model):
    """Requests per replica. Memory is also the limit; GPUs are requested and limited alike."""

    cpu: Quantity | None = Field(None, description="CPU request, e.g. 4 or 500m.")
    memory: Quantity | None = Field(None, description="Memory request and limit, e.g. 16Gi.")
    gpu: Annotated[StrictInt, Field(ge=0, le=16)] = Field(0, description="nvidia.com/gpu per replica.")
    ephemeral_storage: Quantity | None = Field(None, description="ephemeral-storage request, e.g. 50Gi.")

    _check = field_validator("cpu", "memory", "ephemeral_storage", mode="before")(
        lambda v: None if v is None else _quantity(v)
    )


class Replica(_Model):
    """One replica type (role) of the job."""

    replicas: Annotated[StrictInt, Field(ge=1)] = Field(1, description="Number of pods of this role (≥ 1).")
    resources: Resources | None = Field(None, description="Overrides the job-level resources.")
    image: StrictStr | None = Field(None, description="Overrides the job-level image.")
    command: list[StrictStr] | None = Field(None, description="Overrides the job-level command.")
    args: list[StrictStr] | None = Field(None, description="Overrides the job-level args.")
    restart_policy: Literal["Always", "OnFailure", "Never", "ExitCode"] | None = Field(
        None, description="Overrides the job-level restartPolicy."
    )

    _image = field_validator("image")(valid_image)


class Toleration(_Model):
    key: StrictStr | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: StrictStr | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = None

    @model_validator(mode="after")
    def _rules(self) -> Toleration:
        if self.key:
            _check(names.qualified_name_problem(self.key))
        if self.operator == "Exists" and self.value:
            raise ValueError("value must be empty when operator is Exists")
        if self.operator == "Equal" and self.value is not None:
            _check(names.label_value_problem(self.value))
        if not self.key and self.operator != "Exists":
            raise ValueError("operator must be Exists when key is empty")
        if self.toleration_seconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies only to effect NoExecute")
        return self


class Placement(_Model):
    """Where the pods run."""

    accelerator: StrictStr | None = Field(
        None,
        description="GKE accelerator type (e.g. nvidia-l4). Rendered as the nodeSelector "
        "cloud.google.com/gke-accelerator plus an nvidia.com/gpu NoSchedule toleration.",
    )
    spot: StrictBool = Field(
        False, description="Run on Spot VMs: nodeSelector cloud.google.com/gke-spot=true plus its toleration."
    )
    priority_class: StrictStr | None = Field(None, description="priorityClassName of every pod.")
    queue: StrictStr | None = Field(None, description="Kueue LocalQueue: label kueue.x-k8s.io/queue-name.")
    termination_grace_period_seconds: Annotated[StrictInt, Field(ge=1, le=3600)] | None = Field(
        None,
        description="terminationGracePeriodSeconds of the pods on Spot VMs (spot: true): the time between SIGTERM "
        "and SIGKILL for the trainer's SIGTERM checkpoint. Default 60 with spot. A GKE spot reclaim gives pods "
        "at most 15 s whatever this says; evictions by Kueue/priority preemption or deletion honour it.",
    )
    node_selector: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Extra node labels.")
    tolerations: list[Toleration] = Field(default_factory=list, description="Extra tolerations.")

    @field_validator("accelerator")
    @classmethod
    def _accelerator(cls, v: str | None) -> str | None:
        if v is not None and not _ACCELERATOR.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a GKE accelerator type; expected e.g. nvidia-l4, nvidia-tesla-t4, nvidia-h100-80gb"
            )
        return v

    @field_validator("priority_class", "queue")
    @classmethod
    def _dns(cls, v: str | None) -> str | None:
        if v is not None and not is_dns1123_label(v):
            raise ValueError(f"{v!r} is not a valid name; expected a DNS-1123 label (lower-case, ≤ 63 chars)")
        return v

    @field_validator("node_selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        return _string_map("nodeSelector", v, values_are_labels=True)


class Elastic(_Model):
    """torchrun elastic training (PyTorchJob only)."""

    min_replicas: Annotated[StrictInt, Field(ge=1)] = Field(..., description="Fewest Worker pods to run with.")
    max_replicas: Annotated[StrictInt, Field(ge=1)] = Field(..., description="Most Worker pods to scale to.")
    rdzv_backend: Literal["c10d", "etcd", "etcd-v2"] = Field("c10d", description="Rendezvous backend.")
    rdzv_port: Annotated[StrictInt, Field(ge=1, le=65535)] | None = None
    rdzv_host: StrictStr | None = None
    rdzv_id: StrictStr | None = None
    max_restarts: Annotated[StrictInt, Field(ge=0)] | None = Field(None, description="torchrun --max-restarts.")

    @field_validator("rdzv_host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is not None:
            _check(names.host_problem(v))
        return v

    @model_validator(mode="after")
    def _bounds(self) -> Elastic:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        return self


class Distribution(_Model):
    """How processes are laid out (PyTorchJob only)."""

    nproc_per_node: StrictStr | StrictInt | None = Field(
        None, description="Processes per pod: auto, cpu, gpu or a positive integer. Rendered as a string."
    )
    elastic: Elastic | None = None

    @field_validator("nproc_per_node")
    @classmethod
    def _nproc(cls, v: str | int | None) -> str | None:
        if v is None:
            return None
        text = str(v)
        if text in ("auto", "cpu", "gpu") or (text.isdigit() and int(text) > 0):
            return text
        raise ValueError(f"{v!r} is not valid; expected auto, cpu, gpu or a positive integer")


class RunPolicy(_Model):
    """The job's runPolicy."""

    backoff_limit: Annotated[StrictInt, Field(ge=0)] | None = None
    active_deadline_seconds: Annotated[StrictInt, Field(ge=1)] | None = None
    ttl_seconds_after_finished: Annotated[StrictInt, Field(ge=0)] | None = None
    clean_pod_policy: Literal["None", "Running", "All"] | None = None
    suspend: StrictBool | None = None


class Hyperparameter(_Model):
    """A typed hyperparameter, passed to the container as ``--<name>=<value>``."""

    type: Literal["int", "float", "str", "bool"]
    default: ScalarValue = Field(..., description="The value used unless overridden (--param, retrain request).")
    min: StrictInt | StrictFloat | None = None
    max: StrictInt | StrictFloat | None = None
    choices: list[ScalarValue] | None = None
    help: StrictStr | None = None

    @model_validator(mode="after")
    def _default_fits(self) -> Hyperparameter:
        coerce_param(self, self.default)
        for choice in self.choices or ():
            check_type(self.type, choice)
        return self


class Storage(_Model):
    """GCS locations, passed to every container as DATA_URI, OUTPUT_URI and CHECKPOINT_URI."""

    data: StrictStr | None = Field(None, description="Training data, gs://bucket/prefix.")
    output: StrictStr | None = Field(None, description="Model registry root, gs://bucket/prefix.")
    checkpoints: StrictStr | None = Field(None, description="Checkpoint root, gs://bucket/prefix.")

    _check = field_validator("data", "output", "checkpoints")(_gs_uri)


class GcsFuseVolume(_Model):
    """A Cloud Storage FUSE CSI ephemeral volume (needs the GKE GcsFuseCsiDriver add-on)."""

    name: StrictStr
    bucket: StrictStr
    mount_path: StrictStr
    read_only: StrictBool = True
    mount_options: StrictStr | None = Field(None, description="e.g. implicit-dirs,file-cache:max-size-mb:-1")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not is_dns1123_label(v):
            raise ValueError(f"{v!r} is not a valid volume name; expected a DNS-1123 label")
        return v

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        _gs_uri(f"gs://{v}")
        return v

    @field_validator("mount_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} is not an absolute path")
        return v


class Volumes(_Model):
    shm: StrictBool | Quantity = Field(
        True,
        description="Memory-backed emptyDir at /dev/shm (DataLoader workers and NCCL need more than the "
        "64Mi default). true: no size limit; a quantity: that sizeLimit; false: none.",
    )
    gcsfuse: list[GcsFuseVolume] = Field(default_factory=list)

    @field_validator("shm", mode="before")
    @classmethod
    def _shm(cls, v: Any) -> Any:
        return v if isinstance(v, bool) else _quantity(v)


class JobSpec(_Model):
    """A training job: one PyTorchJob or TFJob (kubeflow.org/v1)."""

    api_version: Literal["jobgen/v1"] = Field("jobgen/v1", description="Spec format version.")
    kind: Literal["PyTorchJob", "TFJob"]
    name: StrictStr = Field(..., description="Job name: a DNS-1035 label, short enough for its pod names.")
    namespace: StrictStr = "default"
    image: StrictStr = Field(..., min_length=1)
    command: list[StrictStr] | None = Field(None, description="Container entrypoint; the image's if omitted.")
    args: list[StrictStr] = Field(default_factory=list)
    working_dir: StrictStr | None = None
    replicas: dict[StrictStr, Replica] = Field(
        ..., description="Replica types: Master/Worker (PyTorchJob) or Chief/Worker/PS/Evaluator (TFJob)."
    )
    resources: Resources = Field(default_factory=Resources, description="Default resources for every role.")
    placement: Placement = Field(default_factory=Placement)
    distribution: Distribution | None = None
    run_policy: RunPolicy = Field(default_factory=RunPolicy)
    restart_policy: Literal["Always", "OnFailure", "Never", "ExitCode"] = Field(
        "ExitCode",
        description="ExitCode (default): training-operator v1.9.4 recreates a replica whose container exited with "
        "a code >= 128 (143 SIGTERM/preemption, 137 SIGKILL, the trainer's 138 for transient infrastructure "
        "failures) and fails the job on 1-127 (the trainer's 1 bug, 2 bad input, 3 no usable CUDA); "
        "see docs/trainer.md. OnFailure retries every failure, bad input included, until backoffLimit.",
    )
    success_policy: Literal["", "AllWorkers"] | None = Field(None, description="TFJob only.")
    hyperparameters: dict[StrictStr, Hyperparameter] = Field(default_factory=dict)
    storage: Storage = Field(default_factory=Storage)
    env: dict[StrictStr, ScalarValue] = Field(default_factory=dict)
    service_account: StrictStr | None = Field(
        None, description="Kubernetes ServiceAccount, bound to a Google service account by Workload Identity."
    )
    labels: dict[StrictStr, StrictStr] = Field(default_factory=dict)
    annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Annotations of the job.")
    pod_annotations: dict[StrictStr, StrictStr] = Field(default_factory=dict, description="Annotations of every pod.")
    volumes: Volumes = Field(default_factory=Volumes)
    template: StrictStr | None = Field(None, description="Template file name, looked up in --templates first.")

    _image = field_validator("image")(valid_image)

    _dns1123 = field_validator("namespace", "service_account")(valid_dns1123_label)

    _env = field_validator("env")(valid_env)
    _labels = field_validator("labels")(valid_labels)
    _annotations = field_validator("annotations", "pod_annotations")(valid_annotations)

    @field_validator("hyperparameters")
    @classmethod
    def _hp_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise ValueError(f"hyperparameter name {key!r} is not valid; expected [A-Za-z][A-Za-z0-9_-]*")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> JobSpec:
        allowed = ROLES[self.kind]
        for role in self.replicas:
            if role not in allowed:
                raise FieldError(
                    ("replicas", role), f"unknown replica type for {self.kind}; expected one of {', '.join(allowed)}"
                )
        if not self.replicas:
            raise FieldError(("replicas",), f"at least one replica type is required ({', '.join(allowed)})")
        if self.kind == "PyTorchJob":
            master = self.replicas.get("Master")
            if master is not None and master.replicas != 1:
                raise FieldError(("replicas", "Master", "replicas"), f"must be exactly 1, got {master.replicas}")
            worker_only = self.replicas.get("Worker")
            if (
                master is None
                and worker_only is not None
                and worker_only.replicas > 1
                and not (self.distribution and self.distribution.elastic)
            ):
                raise FieldError(
                    ("replicas", "Worker", "replicas"),
                    f"{worker_only.replicas} Worker pods without a Master replica or distribution.elastic: "
                    "training-operator v1.9.4 then sets no MASTER_ADDR/RANK/WORLD_SIZE and every pod would "
                    "train alone; add replicas.Master (replicas: 1) or distribution.elastic",
                )
            if self.distribution and self.distribution.elastic:
                worker = self.replicas.get("Worker")
                if worker is None:
                    raise FieldError(
                        ("replicas", "Worker"), "a Worker role is required when distribution.elastic is set"
                    )
                el = self.distribution.elastic
                if not el.min_replicas <= worker.replicas <= el.max_replicas:
                    raise FieldError(
                        ("replicas", "Worker", "replicas"),
                        f"must lie within elastic minReplicas..maxReplicas ({el.min_replicas}..{el.max_replicas}), "
                        f"got {worker.replicas}",
                    )
        else:
            if self.distribution is not None:
                raise FieldError(("distribution",), "only PyTorchJob supports distribution; TFJob uses TF_CONFIG")
            chiefs = [r for r in ("Chief",) if r in self.replicas]
            if chiefs and self.replicas["Chief"].replicas > 1:
                raise FieldError(("replicas", "Chief", "replicas"), "must be at most 1")
        if self.success_policy is not None and self.kind != "TFJob":
            raise FieldError(("successPolicy",), "only TFJob supports successPolicy")
        for role, rep in self.replicas.items():
            res = rep.resources or self.resources
            where = ("replicas", role, "resources", "gpu") if rep.resources else ("resources", "gpu")
            if res.gpu > 0 and not self.placement.accelerator:
                raise FieldError(
                    where,
                    f"gpu is {res.gpu} but placement.accelerator is not set; expected an accelerator "
                    "type such as nvidia-l4 (GKE schedules GPUs by accelerator)",
                )
        self._check_name()
        return self

    def _check_name(self) -> None:
        if not is_dns1035(self.name, 10_000):
            raise FieldError(
                ("name",),
                f"{self.name!r} is not a DNS-1035 label; expected lower-case letters, digits "
                "and '-', starting with a letter and ending alphanumeric",
            )
        limit = max_job_name_len(self.role_sizes())
        if len(self.name) > min(limit, DNS1035_MAX):
            raise FieldError(
                ("name",),
                f"{self.name!r} is {len(self.name)} characters; at most {limit} fit, so that "
                "every pod name <job>-<role>-<n> stays within 63 characters",
            )

    def role_sizes(self) -> dict[str, int]:
        """Lower-cased role → largest replica count it can reach (elastic maxReplicas for Worker)."""
        sizes = {role.lower(): rep.replicas for role, rep in self.replicas.items()}
        if self.distribution and self.distribution.elastic and "worker" in sizes:
            sizes["worker"] = max(sizes["worker"], self.distribution.elastic.max_replicas)
        return sizes


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def check_type(kind: str, value: Any) -> Any:
    """Check that ``value`` has hyperparameter type ``kind`` (ints count as floats)."""
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        raise ValueError(f"expected {kind}, got {type(value).__name__} {value!r}")
    return float(value) if kind == "float" else value


def coerce_param(hp: Hyperparameter, value: Any) -> Any:
    """Coerce a hyperparameter value (strings from the CLI are parsed) and check its bounds."""
    if isinstance(value, str) and hp.type != "str":
        text = value.strip()
        try:
            if hp.type == "int":
                value = int(text)
            elif hp.type == "float":
                value = float(text)
                if not math.isfinite(value):
                    raise ValueError
            else:
                value = _BOOL_WORDS[text.lower()]
        except (ValueError, KeyError):
            raise ValueError(f"expected {hp.type}, got {value!r}") from None
    value = check_type(hp.type, value)
    if hp.type in ("int", "float"):
        low = hp.min if hp.min is not None else -DEFAULT_NUMBER_BOUND
        high = hp.max if hp.max is not None else DEFAULT_NUMBER_BOUND
        if value < low:
            raise ValueError(
                f"{value!r} is below the minimum {low}"
                + ("" if hp.min is not None else " (the default bound of a hyperparameter without min)")
            )
        if value > high:
            raise ValueError(
                f"{value!r} is above the maximum {high}"
                + ("" if hp.max is not None else " (the default bound of a hyperparameter without max)")
            )
    if hp.type == "str" and len(value) > STRING_PARAM_MAX:
        raise ValueError(f"is {len(value)} characters; at most {STRING_PARAM_MAX}")
    if hp.choices is not None and value not in hp.choices:
        raise ValueError(f"{value!r} is not one of {hp.choices}")
    return value
