"""The one cluster client: every call jobgen makes to a Kubernetes apiserver goes through here.

Built on the official ``kubernetes`` client (imported lazily; no other jobgen module imports it).
Objects go in and come out as plain dicts. Applies are server-side applies with field manager
``jobgen`` and strict field validation, like ``kubectl apply --server-side``.

Failures come in two kinds:
- :class:`jobgen.errors.ClusterError`: the apiserver could not be reached (one line naming the
  kube context), and :class:`ApiRejected` with a 408/425/429/5xx status: both transient, retried
  with jittered backoff by the one policy in :mod:`jobgen.retry` for ``retry_seconds``;
- any other :class:`ApiRejected`: permanent, raised at once with the apiserver's own message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from jobgen import kubeflow, retry
from jobgen.errors import ApiRejected, ClusterError

__all__ = ["ApiRejected", "Cluster", "ClusterError", "connect", "is_conflict", "is_transient"]

FIELD_MANAGER = "jobgen"
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
T = TypeVar("T")


# The apiserver answers a server-side apply whose object does not fit the schema with a 500
# ("failed to create typed patch object ... field not declared in schema"): the same request
# fails the same way every time, so it is permanent despite its status.
_PERMANENT_500 = ("failed to create typed patch object",)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the apiserver was unreachable, overloaded, timing out or restarting."""
    if isinstance(exc, ClusterError):
        return True
    if not isinstance(exc, ApiRejected) or not (exc.status in TRANSIENT_STATUS or exc.status >= 500):
        return False
    return not any(text in str(exc) for text in _PERMANENT_500)


def is_conflict(exc: BaseException) -> bool:
    """AlreadyExists on create, or a stale resourceVersion on update."""
    return isinstance(exc, ApiRejected) and exc.status == 409


class Cluster:
    """An API client bound to one kube context (see :func:`connect`)."""

    def __init__(self, api: Any, context: str, host: str, namespace: str, retry_seconds: float = 30.0) -> None:
        self.api = api
        self.context = context
        self.host = host
        self.namespace = namespace
        self.retry_seconds = retry_seconds
        self._dynamic: Any = None
        self._resources: dict[tuple[str, str], Any] = {}

    # --- plumbing -------------------------------------------------------------------------
    def _unreachable(self, reason: Any) -> ClusterError:
        text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
        return ClusterError(f"cannot reach the cluster of kube context {self.context!r} at {self.host}: {text}")

    def _once(self, fn: Callable[[], T]) -> T:
        """One call, with the client's exceptions translated into ClusterError/ApiRejected."""
        from kubernetes.client.exceptions import ApiException
        from kubernetes.dynamic.exceptions import DynamicApiError

        try:
            return fn()
        except (ApiException, DynamicApiError) as exc:
            status = getattr(exc, "status", None)
            if status in (0, None):
                raise self._unreachable(getattr(exc, "reason", exc)) from None
            message, reason = _status_message(exc)
            raise ApiRejected(int(status), reason, message) from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        except Exception as exc:  # urllib3 errors (MaxRetryError, ProtocolError...) are not all OSErrors
            if type(exc).__module__.startswith("urllib3"):
                raise self._unreachable(exc) from None
            raise

    def _call(self, fn: Callable[[], T], what: str) -> T:
        """:meth:`_once` under the retry policy for transient failures."""
        return retry.call(lambda: self._once(fn), is_transient, deadline=self.retry_seconds, what=what)

    def _resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        if key not in self._resources:
            from kubernetes.dynamic import DynamicClient
            from kubernetes.dynamic.exceptions import ResourceNotFoundError

            if self._dynamic is None:
                self._dynamic = self._call(lambda: DynamicClient(self.api), "discovery")
            try:
                self._resources[key] = self._call(
                    lambda: self._dynamic.resources.get(api_version=api_version, kind=kind), "discovery"
                )
            except ResourceNotFoundError:
                hint = (
                    "; install the training-operator first: make operator"
                    if api_version == kubeflow.API_VERSION
                    else ""
                )
                raise ClusterError(
                    f"kube context {self.context!r} has no {kind} resource ({api_version}){hint}"
                ) from None
        return self._resources[key]

    @staticmethod
    def _plain(result: Any) -> dict[str, Any]:
        out: dict[str, Any] = result.to_dict() if hasattr(result, "to_dict") else dict(result or {})
        return out

    # --- generic objects --------------------------------------------------------------------
    def apply(
        self,
        manifest: dict[str, Any],
        dry_run: bool = False,
        force_conflicts: bool = False,
        field_manager: str = FIELD_MANAGER,
    ) -> dict[str, Any]:
        """Server-side apply; returns the object the apiserver stored (or would, with ``dry_run``)."""
        meta = manifest["metadata"]
        namespace = meta.get("namespace") or self.namespace
        body = {**manifest, "metadata": {**meta, "namespace": namespace}}
        res = self._resource(manifest["apiVersion"], manifest["kind"])
        return self._plain(
            self._call(
                lambda: res.server_side_apply(
                    body=body,
                    namespace=namespace,
                    field_manager=field_manager,
                    force_conflicts=force_conflicts or None,
                    dry_run="All" if dry_run else None,
                    query_params=[("fieldValidation", "Strict")],
                ),
                f"apply {manifest['kind']} {meta.get('name')}",
            )
        )

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create; an existing object raises ApiRejected 409 (see :func:`is_conflict`)."""
        namespace = manifest["metadata"].get("namespace") or self.namespace
        res = self._resource(manifest["apiVersion"], manifest["kind"])
        return self._plain(
            self._call(
                lambda: res.create(body=manifest, namespace=namespace, query_params=[("fieldValidation", "Strict")]),
                f"create {manifest['kind']} {manifest['metadata'].get('name')}",
            )
        )

    def replace(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Update with the manifest's resourceVersion: a concurrent writer makes it fail with 409."""
        namespace = manifest["metadata"].get("namespace") or self.namespace
        res = self._resource(manifest["apiVersion"], manifest["kind"])
        return self._plain(
            self._call(
                lambda: res.replace(body=manifest, namespace=namespace),
                f"replace {manifest['kind']} {manifest['metadata'].get('name')}",
            )
        )

    def patch(self, api_version: str, kind: str, name: str, namespace: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch."""
        res = self._resource(api_version, kind)
        return self._plain(
            self._call(
                lambda: res.patch(
                    name=name, namespace=namespace, body=patch, content_type="application/merge-patch+json"
                ),
                f"patch {kind} {name}",
            )
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        res = self._resource(api_version, kind)
        try:
            return self._plain(
                self._call(lambda: res.get(name=name, namespace=namespace or self.namespace), f"get {kind} {name}")
            )
        except ApiRejected as exc:
            if exc.status == 404:
                return None
            raise

    def list_objects(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        res = self._resource(api_version, kind)
        result = self._plain(
            self._call(
                lambda: res.get(namespace=namespace, label_selector=label_selector, field_selector=field_selector),
                f"list {kind}",
            )
        )
        # list items come without apiVersion and kind: put them back, so every object names its type
        return [{"apiVersion": api_version, "kind": kind, **item} for item in result.get("items") or []]

    def delete(
        self, api_version: str, kind: str, name: str, namespace: str | None = None, uid: str | None = None
    ) -> bool:
        """Delete (background propagation); False when it did not exist. ``uid``: only that incarnation."""
        res = self._resource(api_version, kind)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call(
                lambda: res.delete(name=name, namespace=namespace or self.namespace, body=body), f"delete {kind} {name}"
            )
        except ApiRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def watch(
        self, api_version: str, kind: str, namespace: str | None = None, timeout_seconds: int = 60
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) from one watch stream, until the server ends it after ``timeout_seconds``."""
        res = self._resource(api_version, kind)
        stream = self._once(lambda: res.watch(namespace=namespace or self.namespace, timeout=timeout_seconds))
        for event in stream:
            yield str(event["type"]), dict(event["raw_object"])

    def namespaces(self) -> list[str]:
        return [ns["metadata"]["name"] for ns in self.list_objects("v1", "Namespace")]

    def events(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Events about the object ``name``, oldest first."""
        return self.list_objects(
            "v1", "Event", namespace or self.namespace, field_selector=f"involvedObject.name={name}"
        )

    def emit_event(
        self,
        involved: dict[str, Any],
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = FIELD_MANAGER,
    ) -> None:
        """Record an Event about ``involved`` (kubectl describe shows it)."""
        import datetime as dt
        import uuid

        meta = involved["metadata"]
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.create(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:12]}", "namespace": meta.get("namespace")},
                "involvedObject": {
                    "apiVersion": involved.get("apiVersion"),
                    "kind": involved.get("kind"),
                    "name": meta["name"],
                    "namespace": meta.get("namespace"),
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message[:1024],
                "type": event_type,
                "source": {"component": component},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        )

    def pod_logs(
        self, pod: str, namespace: str, container: str, follow: bool, tail: int | None = None
    ) -> Iterator[bytes]:
        from kubernetes import client

        core = client.CoreV1Api(self.api)
        resp = self._call(
            lambda: core.read_namespaced_pod_log(
                pod, namespace, container=container, follow=follow, tail_lines=tail, _preload_content=False
            ),
            f"logs of {pod}",
        )
        try:
            yield from resp.stream(4096)
        finally:
            resp.release_conn()

    # --- training jobs (kubeflow.org/v1) ----------------------------------------------------
    def get_job(self, name: str, namespace: str | None = None, kind: str | None = None) -> dict[str, Any] | None:
        """The training job named ``name`` (trying each kind unless ``kind`` is given)."""
        for k in [kind] if kind else list(kubeflow.KINDS):
            job = self.get(kubeflow.API_VERSION, k, name, namespace)
            if job is not None:
                return job
        return None

    def list_jobs(self, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        """Every PyTorchJob and TFJob in ``namespace`` (kinds whose CRD is missing are skipped)."""
        jobs: list[dict[str, Any]] = []
        for kind in kubeflow.KINDS:
            try:
                jobs += self.list_objects(kubeflow.API_VERSION, kind, namespace or self.namespace, label_selector)
            except ClusterError as exc:
                if "has no" not in str(exc):
                    raise
        return jobs

    def delete_job(self, kind: str, name: str, namespace: str | None = None, uid: str | None = None) -> bool:
        return self.delete(kubeflow.API_VERSION, kind, name, namespace, uid)

    def job_pods(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.list_objects(
            "v1", "Pod", namespace or self.namespace, label_selector=f"{kubeflow.JOB_NAME_LABEL}={name}"
        )

    def wait_job(
        self,
        name: str,
        namespace: str | None = None,
        timeout: float = 600.0,
        poll: float = 1.0,
        until: tuple[str, ...] = kubeflow.TERMINAL_STATES,
    ) -> dict[str, Any]:
        """Poll until the job's state is one of ``until``; TimeoutError names the last state."""
        import time

        deadline = time.monotonic() + timeout
        state = "absent"
        while True:
            job = self.get_job(name, namespace)
            if job is not None:
                state = kubeflow.state_of(job)[0]
                if state in until:
                    return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {name} is {state} after {timeout:.0f}s (waited for {', '.join(until)})")
            time.sleep(poll)


def connect(
    context: str | None = None, kubeconfig: str | None = None, timeout: float = 10.0, retry_seconds: float = 5.0
) -> Cluster:
    """Load the kubeconfig (or in-cluster config) for ``context``; nothing is sent yet.

    Transient failures of each call are retried for ``retry_seconds`` (short by default: a person
    at the CLI wants the error, not a wait; long-running callers such as the watcher pass more)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    cfg = client.Configuration()
    name = context or ""
    namespace = "default"
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if context and chosen is None:
            names = ", ".join(c["name"] for c in contexts) or "none"
            raise ClusterError(f"kube context {context!r} not found in the kubeconfig (contexts: {names})")
        if chosen is None:
            raise ClusterError("the kubeconfig has no current context; pass --context")
        name = chosen["name"]
        namespace = chosen.get("context", {}).get("namespace") or "default"
        config.load_kube_config(config_file=kubeconfig, context=name, client_configuration=cfg)
    except (ConfigException, OSError, TypeError, KeyError, ValueError) as exc:  # kubeconfig problems
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            raise ClusterError(
                f"cannot load a kubeconfig: {exc}; set KUBECONFIG or pass --kubeconfig/--context"
            ) from None
        name = "in-cluster"
        namespace = _incluster_namespace()
    cfg.retries = 0  # retries are jobgen.retry's job
    api = client.ApiClient(cfg)
    api.rest_client.pool_manager.connection_pool_kw["timeout"] = timeout
    return Cluster(api=api, context=name, host=cfg.host, namespace=namespace, retry_seconds=retry_seconds)


def _incluster_namespace() -> str:
    from pathlib import Path

    try:
        return Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text().strip() or "default"
    except OSError:
        return "default"


def _status_message(exc: Any) -> tuple[str, str]:
    body = getattr(exc, "body", None)
    reason = str(getattr(exc, "reason", "") or "")
    try:
        doc = json.loads(body or "")
    except (TypeError, ValueError):
        return str(body or reason), reason
    if not isinstance(doc, dict):
        return str(body), reason
    return str(doc.get("message") or reason), str(doc.get("reason") or reason)
