"""The watcher's only way to the cluster: a narrow interface (:class:`ClusterApi`) and its
implementation over ``jobgen.kube``'s public functions (:class:`KubeAdapter`).

``jobgen.kube`` offers get/list/delete of jobs; creating a job without apply semantics, removing a
finalizer and recording an Event are not among its public functions, so they are implemented here
on the client objects ``kube.Cluster`` exposes (``custom()``/``core()``). When the integrator's
``jobgen.cluster`` lands, only this module changes.

Errors are classified here: :class:`~jobgen.watcher.retrying.Transient` (unreachable, 5xx, 429,
401/403 while credentials or RBAC propagate), :class:`AlreadyExists`, and :class:`Refused` (any
other rejection: permanent).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, Protocol

from jobgen import kube
from jobgen.errors import ClusterError
from jobgen.watcher.retrying import Transient

TRANSIENT_STATUS = {401, 403, 408, 425, 429}
COMPONENT = "retrain-watcher"
BACKEND = "kubernetes"


class AlreadyExists(Exception):
    pass


class Conflict(Transient):
    """409 Conflict (a resourceVersion precondition failed): re-read and try again."""


class Refused(Exception):
    """The apiserver rejected the request for good (invalid object, forbidden field...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason = status, reason


def finished(job: dict[str, Any]) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Succeeded", "Failed") and cond.get("status") == "True":
            return True
    return False


class ClusterApi(Protocol):
    """What the targets need of the cluster, in the watcher's namespace."""

    namespace: str

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create (never update); raises :class:`AlreadyExists`."""

    def get_job(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def list_jobs(self, label_selector: str) -> list[dict[str, Any]]: ...

    def delete_job(self, kind: str, name: str) -> None:
        """Delete; an absent job is fine."""

    def remove_finalizer(self, kind: str, name: str, finalizer: str, known: dict[str, Any] | None = None) -> None:
        """Remove ``finalizer`` from the job if it is there; an absent job is fine. ``known``: the
        job as last read (saves a read when it is current)."""

    def emit_event(self, job: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None: ...


class KubeAdapter:
    """:class:`ClusterApi` over ``jobgen.kube`` (public functions and ``Cluster``'s client objects)."""

    def __init__(self, cluster: kube.Cluster, namespace: str, on_ok: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.on_ok = on_ok or (lambda _b: None)

    def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except Exception as exc:
            raise _translate(exc, self.cluster) from None
        self.on_ok(BACKEND)
        return out

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        plural = kube.PLURALS[manifest["kind"]]

        def create() -> dict[str, Any]:
            resp = self.cluster.custom().create_namespaced_custom_object(
                kube.GROUP,
                kube.VERSION,
                self.namespace,
                plural,
                manifest,
                field_manager=COMPONENT,
                _preload_content=False,
            )
            try:
                return dict(json.loads(resp.data))
            finally:
                resp.release_conn()

        return dict(self._do(create))

    def get_job(self, kind: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._do(lambda: kube.get_job(self.cluster, name, self.namespace, kind))
        return result

    def list_jobs(self, label_selector: str) -> list[dict[str, Any]]:
        return list(self._do(lambda: kube.list_jobs(self.cluster, self.namespace, label_selector=label_selector)))

    def delete_job(self, kind: str, name: str) -> None:
        try:
            self._do(lambda: kube.delete_job(self.cluster, kind, name, self.namespace))
        except Refused as exc:
            if exc.status != 404:
                raise

    def remove_finalizer(self, kind: str, name: str, finalizer: str, known: dict[str, Any] | None = None) -> None:
        plural = kube.PLURALS[kind]
        for _ in range(10):
            job, known = known or self.get_job(kind, name), None
            meta = (job or {}).get("metadata") or {}
            finalizers = meta.get("finalizers") or []
            if job is None or finalizer not in finalizers:
                return
            # A merge patch replaces the list; resourceVersion makes it conditional (409 on a race).
            body = {
                "metadata": {
                    "finalizers": [f for f in finalizers if f != finalizer],
                    "resourceVersion": meta.get("resourceVersion"),
                }
            }

            def send(body: dict[str, Any] = body) -> None:
                resp = self.cluster.custom().patch_namespaced_custom_object(
                    kube.GROUP,
                    kube.VERSION,
                    self.namespace,
                    plural,
                    name,
                    body,
                    field_manager=COMPONENT,
                    _preload_content=False,
                )
                try:
                    _ = resp.data  # read the body: a connection returned unread corrupts the next request on it
                finally:
                    resp.release_conn()

            try:
                self._do(send)
            except Conflict:
                continue
            except Refused as exc:
                if exc.status == 404:
                    return
                raise
            else:
                return
        raise Transient(BACKEND, f"could not remove the finalizer of {kind} {name}: it keeps changing")

    def emit_event(self, job: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None:
        meta = job["metadata"]
        now = dt.datetime.now(dt.UTC)
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": job.get("apiVersion", f"{kube.GROUP}/{kube.VERSION}"),
                "kind": job["kind"],
                "name": meta["name"],
                "namespace": self.namespace,
                "uid": meta.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        self._do(lambda: self.cluster.core().create_namespaced_event(self.namespace, body))


def _translate(exc: Exception, cluster: kube.Cluster) -> Exception:
    if isinstance(exc, (AlreadyExists, Refused, Transient)):
        return exc
    if isinstance(exc, ClusterError):
        return Transient(BACKEND, str(exc))
    status: int | None = None
    reason = message = ""
    if isinstance(exc, kube.ApiRejected):
        status, reason, message = exc.status, exc.reason, str(exc)
    elif type(exc).__name__ == "ApiException" and type(exc).__module__.startswith("kubernetes"):
        status = getattr(exc, "status", None) or 0
        reason, message = str(getattr(exc, "reason", "")), ""
        try:
            body = json.loads(getattr(exc, "body", None) or "{}")
            reason, message = body.get("reason") or reason, body.get("message") or ""
        except (TypeError, ValueError):
            message = str(getattr(exc, "body", ""))[:300]
        if not status:
            return Transient(BACKEND, f"cannot reach {cluster.host}: {reason}")
    if status is not None:
        if status == 409 and reason == "AlreadyExists":
            return AlreadyExists(message)
        if status == 409:
            return Conflict(BACKEND, f"409 {reason}: {message[:200]}")
        if status in TRANSIENT_STATUS or status >= 500 or (status == 409 and reason != "AlreadyExists"):
            return Transient(BACKEND, f"{status} {reason}: {message[:200]}")
        return Refused(status, reason, message[:500])
    mod = type(exc).__module__
    if isinstance(exc, (OSError, TimeoutError)) or mod.startswith("urllib3"):
        return Transient(BACKEND, f"cannot reach {cluster.host}: {type(exc).__name__}: {str(exc)[:200]}")
    return exc
