"""Offline validation of prediction Jobs (``batch/v1``), before anything reaches a cluster.

1. the Kubernetes v1.36 ``Job`` schema (strict: unknown fields are errors), from the
   ``kubernetes-validate`` package, as for the training jobs' pod templates;
2. the rules the apiserver's Job validation enforces that the schema cannot express, plus the
   predictor's own: an Indexed Job, ``restartPolicy: Never`` (needed by ``backoffLimitPerIndex`` and
   ``podFailurePolicy``), the ``predictor`` container, and a name short enough for every pod hostname.
"""

from __future__ import annotations

from typing import Any

from jobgen.errors import Problem, UserError
from jobgen.names import is_dns1035
from jobgen.predict.labels import CONTAINER
from jobgen.predict.render import max_name_len
from jobgen.validate import k8s_validator, name_length_problems, namespace_problems
from jobgen.validate import schema_problems_of as format_errors  # one formatter of jsonschema errors


def schema_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Layer 1: the core ``batch/v1`` Job schema."""
    if manifest.get("apiVersion") != "batch/v1" or manifest.get("kind") != "Job":
        return [Problem("kind", f"expected a batch/v1 Job, got {manifest.get('apiVersion')}/{manifest.get('kind')}")]
    problems: list[Problem] = format_errors(k8s_validator("job-batch-v1.json"), manifest)
    return problems


def rule_problems(manifest: dict[str, Any]) -> list[Problem]:
    """Layer 2: Job rules outside the schema, and the predictor's."""
    problems: list[Problem] = []
    meta = manifest.get("metadata") or {}
    spec = manifest.get("spec") or {}
    if spec.get("completionMode") != "Indexed":
        problems.append(Problem("spec.completionMode", f"must be Indexed, got {spec.get('completionMode')!r}"))
    completions = spec.get("completions")
    if not isinstance(completions, int) or completions < 1:
        problems.append(Problem("spec.completions", f"must be at least 1 for an Indexed Job, got {completions!r}"))
    parallelism = spec.get("parallelism")
    if not isinstance(parallelism, int) or parallelism < 1:
        problems.append(Problem("spec.parallelism", f"must be at least 1, got {parallelism!r}"))
    if spec.get("backoffLimitPerIndex") is None and spec.get("maxFailedIndexes") is not None:
        problems.append(Problem("spec.maxFailedIndexes", "requires spec.backoffLimitPerIndex"))
    limit = spec.get("maxFailedIndexes")
    if isinstance(limit, int) and isinstance(completions, int) and limit > completions:
        problems.append(Problem("spec.maxFailedIndexes", f"must not exceed completions ({completions}), got {limit}"))
    pod = ((spec.get("template") or {}).get("spec")) or {}
    restart = pod.get("restartPolicy")
    if restart != "Never":
        problems.append(
            Problem(
                "spec.template.spec.restartPolicy",
                f"must be Never (backoffLimitPerIndex and podFailurePolicy need it), got {restart!r}",
            )
        )
    containers = [c for c in pod.get("containers") or [] if isinstance(c, dict)]
    if not any(c.get("name") == CONTAINER for c in containers):
        problems.append(Problem("spec.template.spec.containers", f"must have a container named {CONTAINER!r}"))
    for idx, c in enumerate(containers):
        if not c.get("image"):
            problems.append(Problem(f"spec.template.spec.containers[{idx}].image", "is required"))
    for idx, rule in enumerate((spec.get("podFailurePolicy") or {}).get("rules") or []):
        if isinstance(rule, dict) and rule.get("action") == "FailIndex" and spec.get("backoffLimitPerIndex") is None:
            problems.append(
                Problem(f"spec.podFailurePolicy.rules[{idx}].action", "FailIndex requires spec.backoffLimitPerIndex")
            )
    name = meta.get("name")
    if not isinstance(name, str) or not is_dns1035(name):
        problems.append(
            Problem(
                "metadata.name",
                f"{name!r} is not a DNS-1035 label (lower-case letters, digits, '-', starting with a letter, ≤ 63)",
            )
        )
    elif isinstance(completions, int) and completions >= 1:
        problems += name_length_problems(name, max_name_len(completions), "pod hostname <job>-<index> stays within 63")
    problems += namespace_problems(meta)
    return problems


def manifest_problems(manifest: dict[str, Any]) -> list[Problem]:
    return schema_problems(manifest) + rule_problems(manifest)


def validate_manifest(manifest: dict[str, Any], source: str | None = None) -> None:
    """Raise :class:`UserError` listing every problem in ``manifest``."""
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{source} (rendered Job)" if source else None)
