"""The watcher's only way to the cluster: a narrow interface (:class:`ClusterApi`) and its
implementation over jobgen's one cluster client, :class:`jobgen.kube.Cluster` (:class:`KubeAdapter`).

Errors are classified here, for the watcher's policy: :class:`~jobgen.watcher.retrying.Transient`
(what :func:`jobgen.kube.is_transient` calls transient, plus 401/403 while credentials or RBAC
propagate), :class:`Conflict` (a resourceVersion precondition failed), :class:`AlreadyExists`, and
:class:`Refused` (any other rejection: permanent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from jobgen import kube, kubeflow
from jobgen.errors import ClusterError
from jobgen.watcher.retrying import Transient

# Beyond jobgen.kube.is_transient: right after an install, the watcher's own credentials and RBAC
# may not have propagated yet, so 401/403 are retried while the message stays leased.
WATCHER_TRANSIENT_STATUS = {401, 403}
COMPONENT = "retrain-watcher"
BACKEND = "kubernetes"
BATCH_API_VERSION = "batch/v1"  # kind "Job": a prediction job; every other kind is a kubeflow.org training job


def api_version_of(kind: str) -> str:
    """The apiVersion of a job kind the watcher creates: ``Job`` → batch/v1, else kubeflow.org/v1."""
    return BATCH_API_VERSION if kind == "Job" else kubeflow.API_VERSION


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
    return kubeflow.view(job).finished()


class ClusterApi(Protocol):
    """What the targets need of the cluster, in the watcher's namespace. ``kind`` is a kubeflow.org
    training kind (PyTorchJob, TFJob) or ``Job`` (batch/v1, prediction): :func:`api_version_of`."""

    namespace: str

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create (never update) the manifest's apiVersion/kind; raises :class:`AlreadyExists`."""

    def get_job(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def list_jobs(self, label_selector: str) -> list[dict[str, Any]]: ...

    def delete_job(self, kind: str, name: str) -> None:
        """Delete; an absent job is fine."""

    def remove_finalizer(self, kind: str, name: str, finalizer: str, known: dict[str, Any] | None = None) -> None:
        """Remove ``finalizer`` from the job if it is there; an absent job is fine. ``known``: the
        job as last read (saves a read when it is current)."""

    def emit_event(self, job: dict[str, Any], reason: str, message: str, type_: str = "Normal") -> None: ...


class KubeAdapter:
    """:class:`ClusterApi` over :class:`jobgen.kube.Cluster` (built with ``retry_seconds=0``: the
    watcher retries through its own policy, keeping the message leased)."""

    def __init__(self, cluster: kube.Cluster, namespace: str, on_ok: Callable[[str], None] | None = None) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.on_ok = on_ok or (lambda _b: None)

    def _do(self, fn: Callable[[], Any]) -> Any:
        try:
            out = fn()
        except (kube.ApiRejected, ClusterError) as exc:
            raise _translate(exc, self.cluster) from None
        self.on_ok(BACKEND)
        return out

    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        return dict(self._do(lambda: self.cluster.create(body)))

    def get_job(self, kind: str, name: str) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._do(
            lambda: self.cluster.get(api_version_of(kind), kind, name, self.namespace)
        )
        return result

    def list_jobs(self, label_selector: str) -> list[dict[str, Any]]:
        return list(self._do(lambda: self.cluster.list_jobs(self.namespace, label_selector=label_selector)))

    def delete_job(self, kind: str, name: str) -> None:
        self._do(lambda: self.cluster.delete(api_version_of(kind), kind, name, self.namespace))

    def remove_finalizer(self, kind: str, name: str, finalizer: str, known: dict[str, Any] | None = None) -> None:
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

            def send(body: dict[str, Any] = body) -> dict[str, Any]:
                return self.cluster.patch(api_version_of(kind), kind, name, self.namespace, body)

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
        involved = {**job, "metadata": {**job["metadata"], "namespace": self.namespace}}
        self._do(lambda: self.cluster.emit_event(involved, reason, message, type_, component=COMPONENT))


def _translate(exc: Exception, cluster: kube.Cluster) -> Exception:
    if isinstance(exc, ClusterError):
        return Transient(BACKEND, str(exc))
    if not isinstance(exc, kube.ApiRejected):
        return exc
    status, reason, message = exc.status, exc.reason, str(exc)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(message)
    if status == 409:
        return Conflict(BACKEND, f"409 {reason}: {message[:200]}")
    if kube.is_transient(exc) or status in WATCHER_TRANSIENT_STATUS:
        return Transient(BACKEND, f"{status} {reason}: {message[:200]}")
    return Refused(status, reason, message[:500])
