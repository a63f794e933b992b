"""Names and manifests of the training-job target.

The job name is a pure function of (trigger, job spec name, data key) — the key being (bucket,
version folder, generation of an overwrite or 0) for data and (job, request id or params) for
requests — with a fixed length budget, so that neither replica counts nor a second trigger on the
same spec change or merge names. Creating it twice is an AlreadyExists, and the existing job's
``retrain.jobgen.io/key`` annotation says whether it is the same key (a digest collision is reported,
never taken for "done"). The data URI and generation are injected as env (DATA_URI,
DATA_GENERATION, DATA_OBJECT) and recorded in labels/annotations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jobgen import names
from jobgen.errors import UserError
from jobgen.names import max_job_name_len
from jobgen.spec import JobSpec, Storage

GROUP = "retrain.jobgen.io"
LABEL_TRIGGER = f"{GROUP}/trigger"
LABEL_GENERATION = f"{GROUP}/generation"
LABEL_SOURCE = f"{GROUP}/source"
ANN_OBJECT = f"{GROUP}/object"
ANN_GENERATION = f"{GROUP}/generation"
ANN_DATA_URI = f"{GROUP}/data-uri"
ANN_KEY = f"{GROUP}/key"
ANN_PARAMS = f"{GROUP}/params"
ANN_EVENT_TIME = f"{GROUP}/event-time"


def data_key(bucket: str, obj: str, generation: int) -> str:
    """The dedupe key of a data version, as stored in the job's annotation and the ledger."""
    return json.dumps(["gcs", bucket, obj, generation], ensure_ascii=True, separators=(",", ":"))


def request_key(job: str, request_id: str | None, params: dict[str, Any]) -> str:
    ident: Any = request_id if request_id is not None else params
    return json.dumps(["request", job, ident], ensure_ascii=True, sort_keys=True, separators=(",", ":"))


NAME_MAX = names.DERIVED_MAX  # fixed: any role's child suffix fits after it, whatever the replica counts
FINALIZER = f"{GROUP}/claim"


def job_name(trigger: str, spec_name: str, key: str) -> str:
    """:func:`jobgen.names.derived` of the spec name for (trigger, spec name, key): a pure function,
    at most :data:`NAME_MAX` characters whatever the spec's replica counts."""
    return names.derived(spec_name, json.dumps([trigger, spec_name, key], ensure_ascii=True, separators=(",", ":")))


@dataclass(frozen=True)
class JobRequest:
    """Everything needed to create one job."""

    key: str
    trigger: str  # trigger name, or "request-<job>"
    job: str  # key of config.jobs
    params: dict[str, Any]
    data_uri: str | None = None
    generation: int | None = None
    source_object: str | None = None  # gs://bucket/object
    event_time: str | None = None


def build_manifest(spec: JobSpec, req: JobRequest, namespace: str | None = None) -> dict[str, Any]:
    """Render the job for ``req`` (raises UserError on params that the spec does not declare)."""
    from jobgen.render import render
    from jobgen.validate import manifest_problems

    name = job_name(req.trigger, spec.name, req.key)
    if max_job_name_len(spec.role_sizes()) < len(name):
        raise UserError.one(
            "replicas",
            f"too many replicas for the watcher's job names (at most "
            f"{NAME_MAX} characters): child pod names would exceed 63 characters",
            f"job {req.job}",
        )
    labels = {
        **spec.labels,
        LABEL_TRIGGER: _label(req.trigger),
        LABEL_SOURCE: "request" if req.data_uri is None else "gcs",
    }
    annotations = {**spec.annotations, ANN_KEY: req.key}
    env = dict(spec.env)
    storage = spec.storage
    if req.data_uri is not None:
        try:
            storage = Storage.model_validate({**spec.storage.model_dump(by_alias=True), "data": req.data_uri})
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise UserError.one(
                "storage.data",
                f"data URI {req.data_uri[:200]!r} is not usable: {str(exc).splitlines()[-2].strip()[:200]}",
                f"job {req.job}",
            ) from None
        env["DATA_URI"] = req.data_uri
        annotations[ANN_DATA_URI] = req.data_uri
    if req.generation is not None:
        env["DATA_GENERATION"] = str(req.generation)
        labels[LABEL_GENERATION] = str(req.generation)
        annotations[ANN_GENERATION] = str(req.generation)
    if req.source_object is not None:
        env["DATA_OBJECT"] = req.source_object
        annotations[ANN_OBJECT] = req.source_object
    if req.event_time:
        annotations[ANN_EVENT_TIME] = req.event_time[:64]
    if req.params:
        annotations[ANN_PARAMS] = json.dumps(req.params, sort_keys=True, ensure_ascii=True)
    derived = spec.model_copy(
        update={
            "name": name,
            "namespace": namespace or spec.namespace,
            "labels": labels,
            "annotations": annotations,
            "env": env,
            "storage": storage,
        }
    )
    manifest = render(derived, req.params, source=f"job {req.job}")
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"job {req.job} (rendered for {req.key})")
    # Held until the durable claim records this job: a TTL or a user's delete cannot remove the
    # evidence before then (docs/watcher.md, "Exactly once").
    manifest["metadata"]["finalizers"] = [FINALIZER]
    return manifest


def _label(value: str) -> str:
    from jobgen.names import sanitize

    return value if len(value) <= 63 else sanitize(value, 63)
