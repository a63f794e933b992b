"""Talking to the cluster through the official ``kubernetes`` client (imported lazily).

Applies are server-side applies with field manager ``jobgen`` and strict field validation, like
``kubectl apply --server-side``. Connection problems become one-line :class:`ClusterError`s that
name the kube context; apiserver rejections keep the apiserver's message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator

from jobgen.errors import ClusterError

GROUP = "kubeflow.org"
VERSION = "v1"
FIELD_MANAGER = "jobgen"
PLURALS = {"PyTorchJob": "pytorchjobs", "TFJob": "tfjobs"}
CONTAINERS = {"PyTorchJob": "pytorch", "TFJob": "tensorflow"}
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
REPLICA_TYPE_LABEL = "training.kubeflow.org/replica-type"
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"


@dataclass
class Cluster:
    """An API client bound to one kube context."""

    api: Any
    context: str
    host: str
    namespace: str

    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    def plain(self, obj: Any) -> Any:
        """A client model → plain dict with the API's field names."""
        return self.api.sanitize_for_serialization(obj)


def connect(context: str | None = None, kubeconfig: str | None = None, timeout: float = 10.0) -> Cluster:
    """Load the kubeconfig (or in-cluster config) for ``context``; nothing is sent yet."""
    from kubernetes import client, config

    cfg = client.Configuration()
    name = context or ""
    namespace = "default"
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if context and chosen is None:
            names = ", ".join(c["name"] for c in contexts) or "none"
            raise ClusterError(f"kube context {context!r} not found in the kubeconfig (contexts: {names})")
        name = chosen["name"]
        namespace = chosen.get("context", {}).get("namespace") or "default"
        config.load_kube_config(config_file=kubeconfig, context=name, client_configuration=cfg)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - kubeconfig errors come in many types
        try:
            config.load_incluster_config(client_configuration=cfg)
            name = "in-cluster"
            namespace = _incluster_namespace()
        except Exception:  # noqa: BLE001
            raise ClusterError(f"cannot load a kubeconfig: {exc}; set KUBECONFIG or pass --kubeconfig/--context") from None
    cfg.retries = 0
    api = client.ApiClient(cfg)
    api.rest_client.pool_manager.connection_pool_kw["timeout"] = timeout
    return Cluster(api=api, context=name, host=cfg.host, namespace=namespace)


def _incluster_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace", encoding="utf-8") as fh:
            return fh.read().strip() or "default"
    except OSError:
        return "default"


class ApiRejected(Exception):
    """The apiserver answered with an error status (the message is the apiserver's)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def _call(cluster: Cluster, fn: Any, *args: Any, **kwargs: Any) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        if exc.status in (0, None):
            raise _unreachable(cluster, exc.reason) from None
        message, reason = _status_message(exc)
        raise ApiRejected(exc.status, reason, message) from None
    except OSError as exc:
        raise _unreachable(cluster, exc) from None
    except Exception as exc:  # urllib3 errors (MaxRetryError, ProtocolError…) are not all OSErrors
        if type(exc).__module__.startswith("urllib3"):
            raise _unreachable(cluster, exc) from None
        raise


def _json_call(cluster: Cluster, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a CustomObjectsApi method and decode its JSON body (the generated client returns
    ``object``-typed results unreliably, so the raw response is decoded here)."""
    resp = _call(cluster, fn, *args, _preload_content=False, **kwargs)
    try:
        return json.loads(resp.data) if resp.data else {}
    finally:
        resp.release_conn()


def _unreachable(cluster: Cluster, reason: Any) -> ClusterError:
    text = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    return ClusterError(f"cannot reach the cluster of kube context {cluster.context!r} at {cluster.host}: {text}")


def _status_message(exc: Any) -> tuple[str, str]:
    try:
        body = json.loads(exc.body)
        return body.get("message") or exc.reason, body.get("reason") or exc.reason
    except (TypeError, ValueError):
        return str(exc.body or exc.reason), str(exc.reason)


def apply(cluster: Cluster, manifest: dict[str, Any], server_dry_run: bool = False,
          force_conflicts: bool = False) -> dict[str, Any]:
    """Server-side apply of a PyTorchJob/TFJob (or any object with an ``apiVersion``, e.g. a batch/v1 Job
    of a prediction); returns the object the apiserver stored (or would).

    Uses the client's DynamicClient, whose ``server_side_apply`` sends
    ``application/apply-patch+yaml`` (the generated CustomObjectsApi cannot, before client v31)."""
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    kind = manifest["kind"]
    api_version = manifest.get("apiVersion") or f"{GROUP}/{VERSION}"
    meta = manifest["metadata"]
    namespace = meta.get("namespace") or cluster.namespace
    body = {**manifest, "metadata": {**meta, "namespace": namespace}}
    dynamic = _call(cluster, DynamicClient, cluster.api)
    try:
        resource = _call(cluster, dynamic.resources.get, api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        hint = "; install the training-operator first: make operator" if api_version.startswith(GROUP) else ""
        raise ClusterError(f"kube context {cluster.context!r} has no {kind} resource ({api_version}){hint}") from None
    result = _call(cluster, dynamic.server_side_apply, resource, body=body,
                   namespace=namespace, field_manager=FIELD_MANAGER, force_conflicts=force_conflicts or None,
                   dry_run="All" if server_dry_run else None, query_params=[("fieldValidation", "Strict")])
    return result.to_dict()


def get_job(cluster: Cluster, name: str, namespace: str, kind: str | None = None) -> dict[str, Any] | None:
    """The job named ``name`` (trying PyTorchJob, then TFJob, unless ``kind`` is given)."""
    for k in [kind] if kind else list(PLURALS):
        try:
            return _json_call(cluster, cluster.custom().get_namespaced_custom_object,
                         GROUP, VERSION, namespace, PLURALS[k], name)
        except ApiRejected as exc:
            if exc.status != 404:
                raise
    return None


def list_jobs(cluster: Cluster, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = []
    for plural in PLURALS.values():
        try:
            result = _json_call(cluster, cluster.custom().list_namespaced_custom_object,
                           GROUP, VERSION, namespace, plural, label_selector=label_selector)
        except ApiRejected as exc:
            if exc.status == 404:  # CRD not installed
                continue
            raise
        jobs.extend(result.get("items", []))
    return jobs


def job_pods(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    pods = _call(cluster, cluster.core().list_namespaced_pod, namespace,
                 label_selector=f"{JOB_NAME_LABEL}={name}")
    return [cluster.plain(p) for p in pods.items]


def job_events(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    events = _call(cluster, cluster.core().list_namespaced_event, namespace,
                   field_selector=f"involvedObject.name={name}")
    return [cluster.plain(e) for e in events.items]


def delete_job(cluster: Cluster, kind: str, name: str, namespace: str) -> None:
    _json_call(cluster, cluster.custom().delete_namespaced_custom_object,
          GROUP, VERSION, namespace, PLURALS[kind], name, propagation_policy="Background")


def pod_logs(cluster: Cluster, pod: str, namespace: str, container: str, follow: bool,
             tail: int | None = None) -> Iterator[bytes]:
    resp = _call(cluster, cluster.core().read_namespaced_pod_log, pod, namespace,
                 container=container, follow=follow, tail_lines=tail, _preload_content=False)
    try:
        yield from resp.stream(4096)
    finally:
        resp.release_conn()


def list_batch_jobs(cluster: Cluster, namespace: str | None,
                    label_selector: str | None = None) -> list[dict[str, Any]]:
    """batch/v1 Jobs (prediction jobs) in ``namespace`` (None: every namespace), as plain dicts."""
    from kubernetes import client

    batch = client.BatchV1Api(cluster.api)
    if namespace is None:
        jobs = _call(cluster, batch.list_job_for_all_namespaces, label_selector=label_selector)
    else:
        jobs = _call(cluster, batch.list_namespaced_job, namespace, label_selector=label_selector)
    return [_typed(cluster.plain(j), "batch/v1", "Job") for j in jobs.items]


def get_batch_job(cluster: Cluster, name: str, namespace: str) -> dict[str, Any] | None:
    """The batch/v1 Job ``name`` (None if there is none)."""
    from kubernetes import client

    try:
        job = _call(cluster, client.BatchV1Api(cluster.api).read_namespaced_job, name, namespace)
    except ApiRejected as exc:
        if exc.status == 404:
            return None
        raise
    return _typed(cluster.plain(job), "batch/v1", "Job")


def list_pods(cluster: Cluster, namespace: str, label_selector: str) -> list[dict[str, Any]]:
    """Pods matching ``label_selector``, as plain dicts."""
    pods = _call(cluster, cluster.core().list_namespaced_pod, namespace, label_selector=label_selector)
    return [cluster.plain(p) for p in pods.items]


def _typed(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    # List items come without apiVersion/kind.
    return {"apiVersion": api_version, "kind": kind, **obj}
