"""Sink: the apiserver. Create jobs (AlreadyExists = already done), emit Events, keep state.

State lives in two places, both on the apiserver:
- the jobs themselves (labels/annotations: trigger, key, object, generation), the primary
  ledger: a job name is a function of its key, so a create that says AlreadyExists means "done";
- one ConfigMap (get/update by name only, optimistic concurrency on resourceVersion) with the
  Forbid queue, the polling source's progress and a bounded ledger of recent job names, which
  covers jobs that were deleted by their TTL.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from jobgen.errors import ClusterError
from jobgen.kube import ApiRejected, Cluster
from jobgen.watcher.trigger import LABEL_TRIGGER

TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
COMPONENT = "retrain-watcher"


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the apiserver was unreachable, overloaded, or restarting."""
    if isinstance(exc, ClusterError):
        return True
    if isinstance(exc, ApiRejected):
        return exc.status in TRANSIENT_STATUS or exc.status >= 500 or exc.status in (401, 403)
    return False


def finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Succeeded", "Failed") and cond.get("status") == "True":
            return True
    return False


class KubeSink:
    def __init__(self, cluster: Cluster, namespace: str, state_name: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.state_name = state_name

    # --- jobs ----------------------------------------------------------------
    def create(self, manifest: dict[str, Any]) -> dict[str, Any] | None:
        """Create the job; None if it exists already (it was created before: done)."""
        try:
            return self.cluster.create({**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}})
        except ApiRejected as exc:
            if exc.status == 409 and exc.reason == "AlreadyExists":
                return None
            raise

    def running(self, trigger: str) -> list[dict[str, Any]]:
        jobs = self.cluster.list_jobs(self.namespace, label_selector=f"{LABEL_TRIGGER}={trigger}")
        return [j for j in jobs if not finished(j)]

    def delete(self, job: dict[str, Any]) -> None:
        self.cluster.delete_job(job["kind"], job["metadata"]["name"], self.namespace)

    def event(self, job: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        """A core/v1 Event on the job (what `kubectl describe` shows)."""
        job = {**job, "metadata": {**job["metadata"], "namespace": self.namespace}}
        self.cluster.emit_event(job, reason, message, type_, component=COMPONENT)

    # --- the state ConfigMap ----------------------------------------------------
    def _read(self) -> dict[str, Any]:
        cm = self.cluster.get("v1", "ConfigMap", self.state_name, self.namespace)
        if cm is None:
            raise ClusterError(f"state ConfigMap {self.namespace}/{self.state_name} does not exist; create it "
                               f"(kubectl create configmap {self.state_name} -n {self.namespace}) or install "
                               "the chart")
        return cm

    @staticmethod
    def _decode(raw: dict[str, str] | None) -> dict[str, Any]:
        data = {}
        for key, text in (raw or {}).items():
            try:
                data[key] = json.loads(text)
            except ValueError:
                data[key] = None  # a corrupt entry starts over; the jobs remain the ledger
        return data

    def read_state(self) -> dict[str, Any]:
        """The decoded data of the state ConfigMap (missing: a clear error; the chart creates it)."""
        return self._decode(self._read().get("data"))

    def update_state(self, mutate: Callable[[dict[str, Any]], dict[str, Any] | None], attempts: int = 20) -> None:
        """Read-modify-write (verbs get + update only) guarded by resourceVersion; ``mutate`` gets the
        decoded data and returns the keys to write (None or {}: nothing to write)."""
        for attempt in range(attempts):
            cm = self._read()
            changes = mutate(self._decode(cm.get("data")))
            if not changes:
                return
            data = dict(cm.get("data") or {})
            data.update({k: json.dumps(v, separators=(",", ":"), sort_keys=True) for k, v in changes.items()})
            try:
                self.cluster.replace({**cm, "data": data})
                return
            except ApiRejected as exc:
                if exc.status != 409 or attempt == attempts - 1:
                    raise
                time.sleep(0.02 * (attempt + 1))
