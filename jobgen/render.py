"""Job spec → PyTorchJob/TFJob manifest, through Jinja2 templates.

Python prepares plain values (the *context*); the templates lay out the manifest. Values never
become YAML text: every ``{{ expression }}`` renders as an opaque placeholder scalar, the template's
YAML is parsed, and each placeholder is then replaced by its value as a Python object. A value with
newlines, colons, quotes, ``{{ }}`` or ``&anchors`` therefore cannot add keys or change the
structure; it is one node wherever the template put it. Templates use StrictUndefined.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import jinja2
import yaml

from jobgen.errors import Problem, UserError
from jobgen.kubeflow import JOB_KIND_ENV, JOB_NAME_ENV, KINDS
from jobgen.spec import Hyperparameter, JobSpec, Placement, Replica, Resources, coerce_param

TEMPLATE_DIR = Path(__file__).parent / "templates"
TEMPLATES = {"PyTorchJob": "pytorchjob.yaml.j2", "TFJob": "tfjob.yaml.j2"}

GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
GKE_SPOT = "cloud.google.com/gke-spot"
GKE_NODEPOOL = "cloud.google.com/gke-nodepool"
GPU_RESOURCE = "nvidia.com/gpu"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
GCSFUSE_ANNOTATION = "gke-gcsfuse/volumes"
MANAGED_BY = {"app.kubernetes.io/managed-by": "jobgen"}
# PodSecurity `restricted` (enforced on the training namespace): non-root, RuntimeDefault seccomp,
# no privilege escalation, no capabilities. The images run as a fixed non-root user.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
SPOT_GRACE_SECONDS = 60  # default terminationGracePeriodSeconds of spot roles (docs/trainer.md, "Preemption")
HYPERPARAMETERS_ENV = "JOBGEN_HYPERPARAMETERS"
ENV_FOR_STORAGE = {"data": "DATA_URI", "output": "OUTPUT_URI", "checkpoints": "CHECKPOINT_URI"}

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_SLOT = "\x00jobgen-value:"
_SLOTS_VAR = "_jobgen_slots"


@jinja2.pass_context
def _placeholder(context: jinja2.runtime.Context, value: Any) -> str:
    """Jinja ``finalize``: record the value and emit a quoted placeholder in its stead."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises UndefinedError naming the missing value
    slots: list[Any] = context[_SLOTS_VAR]
    slots.append(value)
    return f'"\\u0000jobgen-value:{len(slots) - 1}"'


class TemplateValueError(ValueError):
    """A template placed a value where it cannot be a whole YAML node, or a value has a bad type."""


def _plain(value: Any) -> Any:
    """A fresh copy of ``value`` made of YAML/JSON types only (manifests never share objects)."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateValueError(f"cannot put {value!r} into a manifest")
        return value
    if isinstance(value, dict):
        out = {}
        for key, val in value.items():
            if not isinstance(key, str):
                raise TemplateValueError(f"mapping keys must be strings, got {type(key).__name__} {key!r}")
            out[key] = _plain(val)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    raise TemplateValueError(f"cannot put a {type(value).__name__} into a manifest")


def _fill(node: Any, slots: list[Any], used: set[int]) -> Any:
    if isinstance(node, str):
        if node.startswith(_SLOT):
            index = int(node[len(_SLOT) :])
            used.add(index)
            return _plain(slots[index])
        return node
    if isinstance(node, dict):
        out = {}
        for raw_key, val in node.items():
            key = _fill(raw_key, slots, used)
            if not isinstance(key, str):
                raise TemplateValueError(f"a value used as a mapping key must be a string, got {key!r}")
            out[key] = _fill(val, slots, used)
        return out
    if isinstance(node, list):
        return [_fill(v, slots, used) for v in node]
    return node


@functools.lru_cache(maxsize=8)
def environment(template_dir: str | None = None) -> jinja2.Environment:
    """A Jinja2 environment that looks in ``template_dir`` first, then in the packaged templates."""
    search = [template_dir] if template_dir else []
    search.append(str(TEMPLATE_DIR))
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        finalize=_placeholder,
        autoescape=False,  # noqa: S701 - the output is YAML, parsed before use; values are inserted as data
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def resolve_params(spec: JobSpec, params: dict[str, Any] | None, source: str | None = None) -> dict[str, Any]:
    """Hyperparameter values: defaults overridden by ``params``, each checked against its declaration."""
    values = {name: hp.default for name, hp in spec.hyperparameters.items()}
    problems = []
    for name, value in (params or {}).items():
        hp: Hyperparameter | None = spec.hyperparameters.get(name)
        if hp is None:
            declared = ", ".join(spec.hyperparameters) or "none"
            problems.append(Problem(f"hyperparameters.{name}", f"unknown hyperparameter; declared: {declared}"))
            continue
        try:
            values[name] = coerce_param(hp, value)
        except ValueError as exc:
            problems.append(Problem(f"hyperparameters.{name}", str(exc)))
    if problems:
        raise UserError(problems, source)
    return values


def _resources(res: Resources) -> dict[str, Any]:
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if res.cpu is not None:
        requests["cpu"] = res.cpu
    if res.memory is not None:
        requests["memory"] = limits["memory"] = res.memory
    if res.ephemeral_storage is not None:
        requests["ephemeral-storage"] = res.ephemeral_storage
    if res.gpu:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = res.gpu
    out: dict[str, Any] = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _arg_value(value: Any) -> str:
    return _env_value(value) if isinstance(value, bool) else str(value)


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def build_context(spec: JobSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The values the templates see: ``job`` and ``roles``."""
    place = spec.placement
    labels = {**spec.labels, **MANAGED_BY}
    if place.queue:
        labels[QUEUE_LABEL] = place.queue
    env = [{"name": k, "value": _env_value(v)} for k, v in spec.env.items()]
    for var, value in ((JOB_NAME_ENV, spec.name), (JOB_KIND_ENV, spec.kind)):
        if var not in spec.env:
            env.append({"name": var, "value": value})
    for field, var in ENV_FOR_STORAGE.items():
        uri = getattr(spec.storage, field)
        if field == "checkpoints" and uri is not None:
            uri = f"{uri.rstrip('/')}/{spec.name}"  # per job: a new job never resumes another's state
        if uri is not None and var not in spec.env:
            env.append({"name": var, "value": uri})
    hp_args = [f"--{name}={_arg_value(value)}" for name, value in params.items()]
    if params and HYPERPARAMETERS_ENV not in spec.env:
        # The same values, typed, for user code (trainer.hparams.load): {"name": {"type", "value"}}.
        typed = {name: {"type": spec.hyperparameters[name].type, "value": value} for name, value in params.items()}
        env.append({"name": HYPERPARAMETERS_ENV, "value": json.dumps(typed, sort_keys=True)})

    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    shm = spec.volumes.shm
    if shm is not False:
        empty_dir: dict[str, Any] = {"medium": "Memory"}
        if isinstance(shm, str):
            empty_dir["sizeLimit"] = shm
        volumes.append({"name": "dshm", "emptyDir": empty_dir})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})  # noqa: S108 - a mount path in the pod
    for vol in spec.volumes.gcsfuse:
        attrs = _drop_none({"bucketName": vol.bucket, "mountOptions": vol.mount_options})
        volumes.append(
            {
                "name": vol.name,
                "csi": {"driver": "gcsfuse.csi.storage.gke.io", "readOnly": vol.read_only, "volumeAttributes": attrs},
            }
        )
        mounts.append({"name": vol.name, "mountPath": vol.mount_path, "readOnly": vol.read_only})
    pod_annotations = dict(spec.pod_annotations)
    if spec.volumes.gcsfuse:
        pod_annotations[GCSFUSE_ANNOTATION] = "true"

    roles = [
        _role(spec, name, rep, spec.labels, pod_annotations, env, hp_args, volumes, mounts)
        for name, rep in spec.replicas.items()
    ]
    job: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": labels,
        "annotations": dict(spec.annotations),
        "run_policy": spec.run_policy.model_dump(by_alias=True, exclude_none=True),
        "nproc_per_node": None,
        "elastic_policy": None,
        "success_policy": spec.success_policy,
        "params": params,
    }
    if spec.distribution is not None:
        job["nproc_per_node"] = spec.distribution.nproc_per_node
        if spec.distribution.elastic is not None:
            job["elastic_policy"] = spec.distribution.elastic.model_dump(by_alias=True, exclude_none=True)
    return {
        "job": job,
        "roles": roles,
        "spec": spec,
        "kind": KINDS[spec.kind],
        "pod_security_context": POD_SECURITY_CONTEXT,
        "container_security_context": CONTAINER_SECURITY_CONTEXT,
    }


def grace_period(place: Placement) -> int | None:
    """terminationGracePeriodSeconds of a pod placed by ``place``: set on spot pods (default 60)."""
    return (place.termination_grace_period_seconds or SPOT_GRACE_SECONDS) if place.spot else None


def pod_placement(place: Placement, res: Resources) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The nodeSelector and tolerations of a pod with resources ``res`` placed by ``place``.

    GPU pods go to nodes of the accelerator type and tolerate the GPU taint; pods without GPUs stay
    off GPU nodes; spot adds the spot label and toleration. Shared by training and prediction jobs.
    """
    node_selector = dict(place.node_selector)
    tolerations = [t.model_dump(by_alias=True, exclude_none=True) for t in place.tolerations]
    if res.gpu and place.accelerator:
        node_selector[GKE_ACCELERATOR] = place.accelerator
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    if place.spot:
        node_selector[GKE_SPOT] = "true"
        tolerations.append({"key": GKE_SPOT, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    return node_selector, tolerations


def container_resources(res: Resources) -> dict[str, Any]:
    """``resources`` of a container: requests, with memory and GPUs also as limits."""
    return _resources(res)


def _role(
    spec: JobSpec,
    name: str,
    rep: Replica,
    pod_labels: dict[str, str],
    pod_annotations: dict[str, str],
    env: list[dict[str, str]],
    hp_args: list[str],
    volumes: list[dict[str, Any]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    place = spec.placement
    res = rep.resources or spec.resources
    node_selector, tolerations = pod_placement(place, res)
    return {
        "name": name,
        "replicas": rep.replicas,
        "restart_policy": rep.restart_policy or spec.restart_policy,
        "termination_grace_period_seconds": grace_period(place),
        "pod_labels": dict(pod_labels),
        "pod_annotations": dict(pod_annotations),
        "service_account": spec.service_account,
        "priority_class": place.priority_class,
        "node_selector": node_selector,
        "tolerations": tolerations,
        "image": rep.image or spec.image,
        "command": rep.command if rep.command is not None else spec.command,
        "args": [*(rep.args if rep.args is not None else spec.args), *hp_args],
        "working_dir": spec.working_dir,
        "env": env,
        "resources": _resources(res),
        "volume_mounts": mounts,
        "volumes": volumes,
    }


def render(
    spec: JobSpec, params: dict[str, Any] | None = None, template_dir: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """Render ``spec`` to a manifest (a plain dict)."""
    values = resolve_params(spec, params, source)
    template_dir = template_dir or os.environ.get("JOBGEN_TEMPLATES") or None
    name = spec.template or TEMPLATES[spec.kind]
    slots: list[Any] = []
    try:
        template = environment(template_dir).get_template(name)
        text = template.render({**build_context(spec, values), _SLOTS_VAR: slots})
        used: set[int] = set()
        manifest = _fill(yaml.load(text, Loader=_Loader), slots, used)  # noqa: S506 - a SafeLoader
        if len(used) != len(slots):
            raise TemplateValueError(
                "every {{ expression }} must be a whole YAML value (a key, or what follows "
                "'key: ' or '- '); build strings inside the expression, e.g. {{ a ~ '-' ~ b }}"
            )
    except jinja2.TemplateNotFound as exc:
        where = f"{template_dir} or the packaged templates" if template_dir else "the packaged templates"
        raise UserError.one("template", f"template {exc.name!r} not found in {where}", source) from None
    except jinja2.UndefinedError as exc:
        raise UserError.one("template", f"template {name!r} uses an undefined value: {exc.message}", source) from None
    except jinja2.TemplateSyntaxError as exc:
        raise UserError.one("template", f"{exc.filename or name}:{exc.lineno}: {exc.message}", source) from None
    except yaml.YAMLError as exc:
        raise UserError.one("template", f"template {name!r} produced invalid YAML: {exc}", source) from None
    except TemplateValueError as exc:
        raise UserError.one("template", f"template {name!r}: {exc}", source) from None
    if not isinstance(manifest, dict):
        raise UserError.one("template", f"template {name!r} did not produce a YAML mapping", source)
    return manifest


def dump_yaml(manifest: dict[str, Any]) -> str:
    """Manifest → YAML text (block style, key order kept)."""
    return yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
