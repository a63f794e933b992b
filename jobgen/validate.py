"""Validating PyTorchJob/TFJob manifests before they reach a cluster.

Three layers, all offline:

1. the vendored training-operator v1.9.4 CRD ``openAPIV3Schema`` (unknown fields are errors, as with
   the apiserver's strict field validation);
2. the Kubernetes core schema of ``PodTemplateSpec`` (v1.36, from the ``kubernetes-validate``
   package) for every replica's pod template;
3. the rules the training-operator's validating webhook enforces (the operator may run without it),
   plus the child-name length rule.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from importlib import resources
from typing import Any

from jobgen.errors import Problem
from jobgen.kubeflow import API_VERSION, KINDS, PYTORCH, TENSORFLOW
from jobgen.names import DNS1035_MAX, is_dns1035, is_dns1123_label, max_job_name_len
from jobgen.schemagen import crd_schema_path

K8S_SCHEMA_VERSION = "v1.36.0"

CLEAN_POD_POLICIES = ("None", "Running", "All")
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")
MANAGED_BY = ("kubeflow.org/training-operator", "kueue.x-k8s.io/multikueue")


@functools.lru_cache(maxsize=4)
def _crd_validator(kind: str) -> Any:
    import jsonschema

    schema = json.loads(crd_schema_path(kind).read_text())
    return jsonschema.Draft7Validator(schema)


@functools.lru_cache(maxsize=4)
def k8s_validator(schema_file: str) -> Any:
    """A validator for one Kubernetes v1.36 object schema of kubernetes-validate (strict: unknown
    fields are errors), e.g. ``podtemplatespec-v1.json`` or ``job-batch-v1.json``."""
    import jsonschema
    from referencing import Registry, Resource

    base = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"{K8S_SCHEMA_VERSION}-local-strict"
    definitions = json.loads((base / "_definitions.json").read_text())
    schema = json.loads((base / schema_file).read_text())
    registry = Registry().with_resource(
        "https://kubernetes.io/api/_definitions.json", Resource.from_contents(definitions)
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def schema_problems_of(validator: Any, doc: Any, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    problems = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        leaf = err
        # anyOf/oneOf: report the most specific sub-error rather than "is not valid under any".
        while leaf.context:
            leaf = min(leaf.context, key=lambda e: len(e.absolute_path) * -1)
        message = leaf.message
        if leaf.validator == "additionalProperties" and leaf.validator_value is False:
            allowed = sorted(leaf.schema.get("properties", {}))
            message = f"{message}; expected one of: {', '.join(allowed)}"
        problems.append(Problem(_path((*prefix, *err.absolute_path)), message))
    return problems


def schema_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Layers 1 and 2: the CRD schema and the core pod template schema."""
    kind = manifest.get("kind")
    if kind not in KINDS:
        return [Problem("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")]
    if manifest.get("apiVersion") != API_VERSION:
        return [Problem("apiVersion", f"expected {API_VERSION}, got {manifest.get('apiVersion')!r}")]
    problems = schema_problems_of(_crd_validator(kind), manifest)
    field = KINDS[kind].replica_field
    specs = (manifest.get("spec") or {}).get(field) or {}
    if isinstance(specs, dict):
        for role, rspec in specs.items():
            template = rspec.get("template") if isinstance(rspec, dict) else None
            if isinstance(template, dict):
                problems += schema_problems_of(
                    k8s_validator("podtemplatespec-v1.json"), template, ("spec", field, role, "template")
                )
    return problems


def rule_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Layer 3: the training-operator webhook's rules and the child-name rule."""
    kind = manifest.get("kind")
    if kind not in KINDS:
        return []
    info = KINDS[kind]
    problems: list[Problem] = []
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    field = info.replica_field
    rspecs = spec.get(field)
    if not isinstance(rspecs, dict) or not rspecs:
        return [Problem(f"spec.{field}", "at least one replica type is required")]

    sizes: dict[str, int] = {}
    chief_or_master = 0
    for role, raw_rspec in rspecs.items():
        here = f"spec.{field}.{role}"
        if role not in info.roles:
            problems.append(Problem(here, f"unsupported replica type; expected one of {', '.join(info.roles)}"))
        rspec = raw_rspec if isinstance(raw_rspec, dict) else {}
        restart = rspec.get("restartPolicy")
        if restart not in (None, *RESTART_POLICIES):
            problems.append(
                Problem(f"{here}.restartPolicy", f"expected one of {', '.join(RESTART_POLICIES)}, got {restart!r}")
            )
        replicas = rspec.get("replicas", 1)
        if isinstance(replicas, int):
            sizes[role.lower()] = replicas
            if info is PYTORCH and role == "Master" and replicas != 1:
                problems.append(Problem(f"{here}.replicas", f"must be 1, got {replicas}"))
            elif replicas < 1:
                problems.append(Problem(f"{here}.replicas", f"must be at least 1, got {replicas}"))
        if role in ("Chief", "Master"):
            chief_or_master += 1
        containers = (((rspec.get("template") or {}).get("spec") or {}).get("containers")) or []
        cpath = f"{here}.template.spec.containers"
        if not containers:
            problems.append(Problem(cpath, "must be specified"))
        default = [c for c in containers if isinstance(c, dict) and c.get("name") == info.container]
        for idx, c in enumerate(containers):
            if isinstance(c, dict) and not c.get("image"):
                problems.append(Problem(f"{cpath}[{idx}].image", "is required"))
        if containers and not default:
            problems.append(Problem(cpath, f"must have a container named {info.container!r}"))
        for c in default:
            ports = [p.get("name") for p in c.get("ports") or [] if isinstance(p, dict)]
            if info.port_name not in ports:
                idx = containers.index(c)
                problems.append(Problem(f"{cpath}[{idx}].ports", f"must declare a port named {info.port_name!r}"))
    if info is TENSORFLOW and chief_or_master > 1:
        problems.append(Problem(f"spec.{field}", "must not have more than 1 Chief or Master role"))

    elastic = spec.get("elasticPolicy")
    if info is PYTORCH and isinstance(elastic, dict):
        if "Worker" not in rspecs:
            problems.append(Problem(f"spec.{field}.Worker", "must be configured if elastic policy is used"))
        if elastic.get("nProcPerNode") is not None and spec.get("nprocPerNode") is not None:
            problems.append(Problem("spec.elasticPolicy.nProcPerNode", "must not be used with spec.nprocPerNode"))
        max_r = elastic.get("maxReplicas")
        if isinstance(max_r, int) and "worker" in sizes:
            sizes["worker"] = max(sizes["worker"], max_r)

    clean = (spec.get("runPolicy") or {}).get("cleanPodPolicy")
    if clean not in (None, *CLEAN_POD_POLICIES):
        problems.append(
            Problem("spec.runPolicy.cleanPodPolicy", f"expected one of {', '.join(CLEAN_POD_POLICIES)}, got {clean!r}")
        )
    managed_by = (spec.get("runPolicy") or {}).get("managedBy")
    if managed_by not in (None, "", *MANAGED_BY):
        problems.append(Problem("spec.runPolicy.managedBy", f"expected one of {', '.join(MANAGED_BY)}"))

    name = meta.get("name")
    if not isinstance(name, str) or not is_dns1035(name, 10_000):
        problems.append(
            Problem(
                "metadata.name",
                f"{name!r} is not a DNS-1035 label (lower-case letters, digits, '-', starting with a letter)",
            )
        )
    else:
        problems += name_length_problems(
            name, min(max_job_name_len(sizes), DNS1035_MAX), "pod name <job>-<role>-<n> stays within 63 characters"
        )
    problems += namespace_problems(meta)
    return problems


def name_length_problems(name: str, limit: int, children: str) -> list[Problem]:
    """The problem with a ``name`` longer than ``limit``, the longest that keeps every name derived from it
    valid; ``children`` says which names and their limit (it ends the message, after "so that every")."""
    if len(name) <= limit:
        return []
    return [Problem("metadata.name", f"is {len(name)} characters; at most {limit} fit, so that every {children}")]


def namespace_problems(meta: dict[str, Any]) -> list[Problem]:
    """metadata.namespace, when set, must be a DNS-1123 label (every kind jobgen renders)."""
    namespace = meta.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not is_dns1123_label(namespace)):
        return [Problem("metadata.namespace", f"{namespace!r} is not a DNS-1123 label")]
    return []


def manifest_problems(manifest: dict[str, Any]) -> list[Problem]:
    return schema_problems(manifest) + rule_problems(manifest)
