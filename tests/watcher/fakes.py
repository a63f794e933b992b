"""In-memory implementations of the watcher's own interfaces (never patched module attributes):
:class:`FakeCluster` is a :class:`jobgen.watcher.targets.kube.ClusterApi`, ``MemBlobs`` (in
jobgen.watcher.state) a ``Blobs``. The integration tests use the real apiserver and fake-gcs-server."""

from __future__ import annotations

import copy
import threading
import uuid
from typing import Any

from jobgen.watcher.retrying import Transient
from jobgen.watcher.targets.kube import AlreadyExists


class FakeCluster:
    def __init__(self, namespace: str = "ns") -> None:
        self.namespace = namespace
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[str] = []
        self.created: list[str] = []  # every successful create, duplicates included
        self.fail = 0  # the next `fail` calls raise Transient
        self.gone: set[str] = set()  # deleted (finalizers permitting)
        self._lock = threading.Lock()

    def _tick(self) -> None:
        if self.fail:
            self.fail -= 1
            raise Transient("kubernetes", "injected outage")

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._tick()
            name = manifest["metadata"]["name"]
            if name in self.jobs:
                raise AlreadyExists(name)
            job = copy.deepcopy(manifest)
            job["metadata"]["uid"] = uuid.uuid4().hex
            self.jobs[name] = job
            self.created.append(name)
            return copy.deepcopy(job)

    def get_job(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            self._tick()
            job = self.jobs.get(name)
            return copy.deepcopy(job) if job else None

    def list_jobs(self, label_selector: str) -> list[dict[str, Any]]:
        key, _, value = label_selector.partition("=")
        with self._lock:
            self._tick()
            return [
                copy.deepcopy(j) for j in self.jobs.values() if (j["metadata"].get("labels") or {}).get(key) == value
            ]

    def delete_job(self, kind: str, name: str) -> None:
        with self._lock:
            self._tick()
            job = self.jobs.get(name)
            if job is None:
                return
            self.deleted.append(name)
            if job["metadata"].get("finalizers"):
                job["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            else:
                del self.jobs[name]

    def remove_finalizer(self, kind: str, name: str, finalizer: str, known: dict[str, Any] | None = None) -> None:
        with self._lock:
            self._tick()
            job = self.jobs.get(name)
            if job is None:
                return
            fins = [f for f in job["metadata"].get("finalizers") or [] if f != finalizer]
            job["metadata"]["finalizers"] = fins
            if not fins and job["metadata"].get("deletionTimestamp"):
                del self.jobs[name]

    def emit_event(self, job: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        with self._lock:
            self._tick()
            self.events.append((job["metadata"]["name"], reason, message))

    # --- test helpers ---
    def finish(self, name: str, ttl_delete: bool = False) -> None:
        """The job succeeds; with ``ttl_delete`` its TTL deletes it (finalizers permitting)."""
        with self._lock:
            job = self.jobs[name]
            job.setdefault("status", {})["conditions"] = [{"type": "Succeeded", "status": "True"}]
        if ttl_delete:
            self.delete_job(job["kind"], name)


class ScriptedBlobs:
    """A ``Blobs`` over :class:`~jobgen.watcher.state.MemBlobs` whose next calls can be scripted:
    ``crash_creates`` (raise like a process dying before the write) and ``stale_reads`` (object
    names whose next get answers "absent", like a read that happened before another replica's write)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.crash_creates = 0
        self.stale_reads: set[str] = set()

    def create(self, name: str, data: bytes) -> Any:
        if self.crash_creates:
            self.crash_creates -= 1
            raise RuntimeError("process died before the write")
        return self.inner.create(name, data)

    def get(self, name: str) -> Any:
        if name in self.stale_reads:
            self.stale_reads.discard(name)
            return None
        return self.inner.get(name)

    def replace(self, name: str, data: bytes, generation: int) -> Any:
        return self.inner.replace(name, data, generation)

    def delete(self, name: str, generation: int | None = None) -> None:
        self.inner.delete(name, generation)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def check(self) -> None:
        self.inner.check()
