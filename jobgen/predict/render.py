"""Prediction spec → ``batch/v1`` Indexed Job manifest.

The job name is a pure function of (spec name, input key): submitting the same input twice (a second
``jobgen predict``, a redelivered notification) names the same Job, so it is one Job, never two.
Placement and resources come from :mod:`jobgen.render`, the code training jobs use.
"""

from __future__ import annotations

import json
from typing import Any

from jobgen import names
from jobgen.kubeflow import JOB_KIND_ENV, JOB_NAME_ENV
from jobgen.names import DNS1035_MAX
from jobgen.predict.labels import ANN_INPUT, ANN_KEY, ANN_MODEL, ANN_OUTPUT, CONTAINER, LABEL_PREDICTION
from jobgen.predict.spec import PredictionSpec
from jobgen.render import (
    CONTAINER_SECURITY_CONTEXT,
    MANAGED_BY,
    POD_SECURITY_CONTEXT,
    QUEUE_LABEL,
    container_resources,
    grace_period,
    pod_placement,
)

EXIT_PERMANENT = 2  # the predictor's exit code for errors a retry cannot fix (podFailurePolicy: FailIndex)


def input_key(prefix: str, glob: str, run: str | None = None) -> str:
    """The dedupe key of an input set: its prefix and glob (and an optional run id)."""
    return json.dumps(["input", prefix.rstrip("/"), glob, run or ""], ensure_ascii=True, separators=(",", ":"))


def data_key(bucket: str, obj: str, generation: int) -> str:
    """The dedupe key of one data version (bucket, object, generation), as the watcher's for training."""
    return json.dumps(["gcs", bucket, obj, generation], ensure_ascii=True, separators=(",", ":"))


def max_name_len(indexes: int) -> int:
    """Longest Job name whose pods' hostnames ``<job>-<index>`` stay within 63 characters."""
    return DNS1035_MAX - 1 - len(str(max(indexes - 1, 0)))


def job_name(spec_name: str, key: str, indexes: int = 1) -> str:
    """:func:`jobgen.names.derived` of the spec name for ``key``: a pure function of (spec name, key)
    whose pod hostnames ``<job>-<index>`` fit whatever the number of indexes (``indexes`` is checked)."""
    name = names.derived(spec_name, key)
    assert len(name) <= max_name_len(indexes), "names.DERIVED_MAX leaves room for any index"
    return name


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def output_uri(spec: PredictionSpec, name: str) -> str:
    """Where the job named ``name`` writes: ``<output>/<job name>``."""
    return f"{spec.output}/{name}"


def predictor_args(spec: PredictionSpec, name: str) -> list[str]:
    return [
        f"--input={spec.input.prefix}",
        f"--glob={spec.input.glob}",
        f"--model={spec.model.uri}",
        f"--model-version={spec.model.version}",
        f"--output={output_uri(spec, name)}",
        f"--batch-size={spec.batch_size}",
        f"--device={spec.resolved_device}",
        f"--completions={spec.indexes}",
        f"--prefetch={spec.prefetch}",
        *spec.args,
    ]


def render(
    spec: PredictionSpec,
    key: str | None = None,
    extra_labels: dict[str, str] | None = None,
    extra_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The Indexed Job for ``spec`` and input ``key`` (default: the spec's own input)."""
    key = key or input_key(spec.input.prefix, spec.input.glob)
    name = job_name(spec.name, key, spec.indexes)
    labels = {**spec.labels, **MANAGED_BY, LABEL_PREDICTION: spec.name, **(extra_labels or {})}
    if spec.placement.queue:
        labels[QUEUE_LABEL] = spec.placement.queue
    annotations = {
        **spec.annotations,
        ANN_KEY: key,
        ANN_INPUT: f"{spec.input.prefix}/{spec.input.glob}",
        ANN_MODEL: f"{spec.model.uri}@{spec.model.version}",
        ANN_OUTPUT: output_uri(spec, name),
        **(extra_annotations or {}),
    }
    node_selector, tolerations = pod_placement(spec.placement, spec.resources)
    env = [{"name": JOB_NAME_ENV, "value": name}, {"name": JOB_KIND_ENV, "value": "Job"}]
    env += [{"name": k, "value": _env_value(v)} for k, v in spec.env.items() if k not in (JOB_NAME_ENV, JOB_KIND_ENV)]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": list(spec.command),
        "args": predictor_args(spec, name),
        "env": env,
        "securityContext": dict(CONTAINER_SECURITY_CONTEXT),
    }
    resources = container_resources(spec.resources)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "securityContext": dict(POD_SECURITY_CONTEXT),
        "containers": [container],
    }
    grace = grace_period(spec.placement)
    if grace is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    if spec.placement.priority_class:
        pod_spec["priorityClassName"] = spec.placement.priority_class
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    pod_labels = {k: v for k, v in labels.items() if k != QUEUE_LABEL}
    template: dict[str, Any] = {"metadata": {"labels": pod_labels}, "spec": pod_spec}
    if spec.pod_annotations:
        template["metadata"]["annotations"] = dict(spec.pod_annotations)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": spec.indexes,
        "parallelism": spec.parallelism,
        "backoffLimitPerIndex": spec.backoff_limit_per_index,
        # Exit code 2 is permanent (bad model, bad arguments): fail that index at once instead of
        # retrying it; a pod evicted or preempted (DisruptionTarget) does not count against the index.
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailIndex",
                    "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_PERMANENT]},
                },
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]
        },
        "template": template,
    }
    if spec.max_failed_indexes is not None:
        job_spec["maxFailedIndexes"] = spec.max_failed_indexes
    if spec.active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = spec.active_deadline_seconds
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels, "annotations": annotations},
        "spec": job_spec,
    }
