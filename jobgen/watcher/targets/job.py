"""Job targets: one cluster job per (trigger, data key), exactly once.

:class:`ClaimedJobTarget` holds the claim protocol below; :class:`TrainingJobTarget` renders
PyTorchJobs/TFJobs, :class:`jobgen.watcher.targets.predict.PredictionJobTarget` batch/v1 Indexed Jobs.

``fire`` runs these steps, each safe to repeat, and a crash between any two of them is recovered
by the next delivery of the same key (on any replica):

1. read the claim ``claims/<trigger>/<sha256(key)>``; if it exists the key was handled: make sure
   step 5 happened, and report ``deduped``;
2. create the job (name = f(trigger, spec name, key)) with the finalizer ``retrain.jobgen.io/claim``;
   AlreadyExists → read it, and if its key annotation differs, it is a name collision: rejected and
   reported, never taken for done;
3. create the claim with ``ifGenerationMatch=0``, recording the job's uid (one writer wins);
4. if the stored claim names another uid, the claimed job ran its whole life (created, recorded,
   released, deleted by its TTL) between step 1 and step 2 of this call: the job just created is a
   duplicate and is deleted at once;
5. remove the finalizer and mark the claim released; emit the RetrainTriggered Event (claim writer only).

The finalizer is what makes "the claim is missing" safe: until the claim exists, the job cannot be
deleted (by its TTL or by anyone), so step 2 on a redelivery finds it and does not create a second one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from jobgen.errors import UserError
from jobgen.spec import JobSpec
from jobgen.watcher.obs import LOG
from jobgen.watcher.retrying import Transient
from jobgen.watcher.sensor.events import Rejected
from jobgen.watcher.state import Claim, ClaimStore
from jobgen.watcher.targets import Fired
from jobgen.watcher.targets.kube import AlreadyExists, ClusterApi, Refused, finished
from jobgen.watcher.targets.naming import ANN_KEY, FINALIZER, LABEL_TRIGGER, JobRequest, build_manifest, job_name


class ClaimedJobTarget:
    """The claim protocol (module docstring) for any job kind; subclasses say how a request renders."""

    key_annotation = ANN_KEY  # the annotation holding the request's key on the created job
    triggered_reason = "RetrainTriggered"  # the Event recorded on the job by the claim writer

    def __init__(self, api: ClusterApi, claims: ClaimStore) -> None:
        self.api = api
        self.claims = claims
        # Step 1's read of the claim runs while the manifest renders (latency: the two overlap).
        self._reads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="claim-read")

    def manifest(self, req: JobRequest) -> dict[str, Any]:
        """The job for ``req``, with :data:`FINALIZER` and ``key_annotation``; UserError if it cannot render."""
        raise NotImplementedError

    def fire(self, req: JobRequest) -> Fired:
        reading = self._reads.submit(self.claims.get, req.trigger, req.key)
        manifest: dict[str, Any] | None = None
        problem = ""
        try:
            manifest = self.manifest(req)
        except UserError as exc:
            problem = str(exc)[:500]
        claim = reading.result()  # its Transient/ClaimCorrupt, if any, is raised here
        if claim is not None:  # handled before (even if the spec no longer renders for it)
            self.release(claim)
            return Fired("deduped", claim.name, claim.kind, claim.state)
        if manifest is None:
            raise Rejected("render", problem)
        kind, name = manifest["kind"], manifest["metadata"]["name"]
        fresh = True
        try:
            job = self.api.create_job(manifest)
        except AlreadyExists:
            fresh = False
            found = self.api.get_job(kind, name)
            if found is None:
                raise Transient("kubernetes", f"{kind} {name} was deleted right after AlreadyExists") from None
            job = found
            theirs = (job["metadata"].get("annotations") or {}).get(self.key_annotation)
            if theirs != req.key:
                detail = (
                    f"{kind} {name} exists for key {str(theirs)[:200]}, not {req.key[:200]}: a job-name "
                    "collision; rename the trigger or spec"
                )
                try:
                    self.api.emit_event(job, "RetrainNameCollision", detail, "Warning")
                except Exception:
                    LOG.warning("could not record the collision Event", exc_info=True)
                raise Rejected("name_collision", detail) from None
        except Refused as exc:
            raise Rejected("apiserver_rejected", str(exc)[:500]) from None
        uid = str(job["metadata"].get("uid") or "")
        stored, ours = self.claims.put(Claim(req.trigger, req.key, "created", name, kind, self.api.namespace, uid))
        if stored.uid != uid or stored.state != "created":
            if fresh:
                LOG.warning(
                    "deleting a duplicate job: its key was handled by another job in the meantime",
                    extra={"job": name, "key": req.key, "claim_uid": stored.uid, "state": stored.state},
                )
                self.api.remove_finalizer(kind, name, FINALIZER)
                self.api.delete_job(kind, name)
            self.release(stored)
            return Fired("deduped", stored.name, stored.kind, "claimed by another job")
        self.release(stored, job)
        if ours:
            what = (
                f"from {req.source_object} generation {req.generation}"
                if req.data_uri
                else f"by retrain request with params {json.dumps(req.params, sort_keys=True)}"
            )
            try:
                self.api.emit_event(job, self.triggered_reason, f"{kind} {name} created {what}")
            except Exception as exc:
                LOG.warning("could not record an Event", extra={"job": name, "error": str(exc)[:200]})
        return Fired("created" if ours else "deduped", name, kind)

    def release(self, claim: Claim, job: dict[str, Any] | None = None) -> None:
        """The finalizer is removed only once the claim exists; the claim remembers that it was."""
        if claim.state == "created" and not claim.released and claim.kind:
            self.api.remove_finalizer(claim.kind, claim.name, FINALIZER, job)
            self.claims.mark_released(claim)

    def stop(self, item: dict[str, Any]) -> None:
        self.api.delete_job(item["kind"], item["metadata"]["name"])


class TrainingJobTarget(ClaimedJobTarget):
    """PyTorchJobs/TFJobs rendered by jobgen from the configured job specs."""

    def __init__(self, api: ClusterApi, claims: ClaimStore, specs: Mapping[str, JobSpec]) -> None:
        super().__init__(api, claims)
        self.specs = specs

    def name_of(self, req: JobRequest) -> str:
        return job_name(req.trigger, self.specs[req.job].name, req.key)

    def manifest(self, req: JobRequest) -> dict[str, Any]:
        return build_manifest(self.specs[req.job], req, self.api.namespace)

    def running(self, trigger: str) -> list[dict[str, Any]]:
        jobs = self.api.list_jobs(f"{LABEL_TRIGGER}={trigger}")
        return [j for j in jobs if not finished(j) and not j["metadata"].get("deletionTimestamp")]
