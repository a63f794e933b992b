"""Prediction jobs for data versions: what the watcher calls when an input batch lands.

``manifest_for_data`` renders the Job for one data version: the spec's input prefix is replaced by
the version's prefix (the glob is kept), and the name is a pure function of (spec name, data key), so
a redelivered or duplicated notification names the same Job. ``create_once`` submits it: a Job that
exists already is left alone (False), so one input version never gets a second prediction job.
"""

from __future__ import annotations

from typing import Any

from jobgen.errors import UserError
from jobgen.predict.labels import ANN_GENERATION, ANN_OBJECT, LABEL_TRIGGER
from jobgen.predict.render import data_key, input_key, render
from jobgen.predict.spec import PredictionSpec, check_gs_uri
from jobgen.predict.validate import manifest_problems


def manifest_for_data(
    spec: PredictionSpec,
    data_uri: str,
    bucket: str,
    obj: str,
    generation: int,
    trigger: str | None = None,
    namespace: str | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """The validated Indexed Job predicting data version ``data_uri`` (gs://bucket/prefix of the version),
    announced by object ``obj`` at ``generation`` (e.g. its ``_SUCCESS`` marker).

    Raises :class:`UserError` (permanent: dead-letter the event) for an unusable URI or Job."""
    where = source or f"prediction {spec.name}"
    try:
        prefix = check_gs_uri(data_uri.rstrip("/"), "the data URI")
    except ValueError as exc:
        raise UserError.one("input.prefix", f"data URI {data_uri[:200]!r} is not usable: {exc}", where) from None
    derived = spec.model_copy(
        update={
            "input": spec.input.model_copy(update={"prefix": prefix}),
            "namespace": namespace or spec.namespace,
        }
    )
    labels = {LABEL_TRIGGER: _label(trigger)} if trigger else {}
    annotations = {ANN_OBJECT: f"gs://{bucket}/{obj}", ANN_GENERATION: str(generation)}
    manifest = render(derived, data_key(bucket, obj, generation), labels, annotations)
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{where} (rendered for gs://{bucket}/{obj}#{generation})")
    return manifest


def create_once(cluster: Any, manifest: dict[str, Any]) -> bool:
    """Submit the Job unless it exists (True: submitted now; False: it was there already).

    Two callers racing apply the same object: still one Job (the name is the dedupe key)."""
    meta = manifest["metadata"]
    if cluster.get("batch/v1", "Job", meta["name"], meta.get("namespace") or cluster.namespace) is not None:
        return False
    cluster.apply(manifest)
    return True


def _label(value: str) -> str:
    from jobgen.names import sanitize

    return (
        value
        if len(value) <= 63 and value.replace("-", "").replace(".", "").replace("_", "").isalnum()
        else sanitize(value, 63)
    )


def manifest_for_run(
    spec: PredictionSpec, run: str, namespace: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """The validated Job for a scheduled run (e.g. ``run`` = the schedule's tick, 2026-11-30T06:00Z) over
    the spec's own input: one Job per tick, named from (spec name, input, tick)."""
    derived = spec.model_copy(update={"namespace": namespace or spec.namespace}) if namespace else spec
    manifest = render(derived, input_key(spec.input.prefix, spec.input.glob, run))
    problems = manifest_problems(manifest)
    if problems:
        raise UserError(problems, f"{source or f'prediction {spec.name}'} (rendered for run {run[:100]!r})")
    return manifest
