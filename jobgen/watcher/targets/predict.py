"""The prediction target: one batch/v1 Indexed Job per (trigger, input version), exactly once.

A config job whose spec has ``kind: BatchPrediction`` is served by :class:`PredictionJobTarget`. The
Job is :func:`jobgen.predict.trigger.manifest_for_data` for the version (the spec's input prefix
replaced by the version's prefix, its glob kept), named by (spec name, data key); the claim protocol
is the training target's (:class:`~jobgen.watcher.targets.job.ClaimedJobTarget`): the claim in the
state bucket, the finalizer held until it exists, the key annotation checked on AlreadyExists.

Prediction triggers run with ``concurrency: Allow`` (enforced by the config): every input version is
predicted, none is queued, coalesced or replaced, so ``running`` has nothing to report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jobgen.errors import UserError
from jobgen.predict.labels import ANN_GENERATION, ANN_OBJECT
from jobgen.predict.labels import ANN_KEY as PREDICTION_ANN_KEY
from jobgen.predict.spec import PredictionSpec
from jobgen.watcher.state import ClaimStore
from jobgen.watcher.targets.job import ClaimedJobTarget
from jobgen.watcher.targets.kube import ClusterApi
from jobgen.watcher.targets.naming import FINALIZER, LABEL_GENERATION, JobRequest


class PredictionJobTarget(ClaimedJobTarget):
    key_annotation = PREDICTION_ANN_KEY
    triggered_reason = "PredictionTriggered"

    def __init__(self, api: ClusterApi, claims: ClaimStore, specs: Mapping[str, PredictionSpec]) -> None:
        super().__init__(api, claims)
        self.specs = specs

    def manifest(self, req: JobRequest) -> dict[str, Any]:
        spec = self.specs[req.job]
        where = f"job {req.job}"
        if req.data_uri is None:
            raise UserError.one("", "a prediction job runs per input version, not per retrain request", where)
        bucket, obj, generation = version_of(req.key, where)
        from jobgen.predict.trigger import manifest_for_data

        manifest = manifest_for_data(
            spec, req.data_uri, bucket, obj, generation, trigger=req.trigger, namespace=self.api.namespace, source=where
        )
        meta = manifest["metadata"]
        if (meta.get("annotations") or {}).get(self.key_annotation) != req.key:  # the claim and the Job name agree
            raise UserError.one("", f"the rendered Job does not carry the key {req.key[:200]}", where)
        # The object that completed the version (the key names its folder) and its generation.
        if req.source_object is not None:
            meta["annotations"][ANN_OBJECT] = req.source_object
        if req.generation is not None:
            meta["annotations"][ANN_GENERATION] = str(req.generation)
            meta.setdefault("labels", {})[LABEL_GENERATION] = str(req.generation)
        # Held until the durable claim records this Job (docs/watcher.md, "Exactly once").
        meta["finalizers"] = [FINALIZER]
        return manifest

    def running(self, trigger: str) -> list[dict[str, Any]]:
        return []  # concurrency is always Allow for prediction triggers (module docstring)


def version_of(key: str, where: str) -> tuple[str, str, int]:
    """(bucket, object, generation) of a data key (:func:`jobgen.watcher.targets.naming.data_key`)."""
    try:
        tag, bucket, obj, generation = json.loads(key)
        if tag != "gcs" or not isinstance(bucket, str) or not isinstance(obj, str) or not isinstance(generation, int):
            raise ValueError(key)
    except (TypeError, ValueError):
        raise UserError.one("", f"{key[:200]!r} is not the key of a data version", where) from None
    return bucket, obj, generation
