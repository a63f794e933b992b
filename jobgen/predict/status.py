"""Prediction Jobs (batch/v1 Indexed Jobs) as rows of ``jobgen status``."""

from __future__ import annotations

from typing import Any

from jobgen.predict.labels import LABEL_PREDICTION
from jobgen.status import JobStatus, RoleStatus, format_age, pending_reason

SELECTOR = LABEL_PREDICTION  # label exists: the Job is a prediction


def job_state(job: dict[str, Any]) -> tuple[str, str]:
    """(state, reason) of a batch Job from its conditions, as kubectl shows them."""
    status = job.get("status") or {}
    conditions = [c for c in status.get("conditions") or [] if c.get("status") == "True"]
    for wanted in ("Failed", "Complete", "Suspended"):
        for cond in conditions:
            if cond.get("type") == wanted:
                reason = (
                    f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ") if wanted != "Complete" else ""
                )
                return wanted, reason
    if status.get("active") or status.get("ready"):
        return "Running", ""
    return "Pending", ""


def summarize(job: dict[str, Any], pods: list[dict[str, Any]] | None = None, now: Any = None) -> JobStatus:
    meta = job.get("metadata") or {}
    spec = job.get("spec") or {}
    status = job.get("status") or {}
    state, reason = job_state(job)
    role = RoleStatus(
        role="Index",
        desired=int(spec.get("completions") or 1),
        ready=int(status.get("ready") or 0),
        active=int(status.get("active") or 0),
        succeeded=int(status.get("succeeded") or 0),
        failed=int(status.get("failed") or 0),
    )
    if state == "Failed" and status.get("failedIndexes"):
        reason += f" (failed indexes {status['failedIndexes']})"
    elif (
        state in ("Pending", "Running")
        and pods is not None
        and role.ready < min(role.desired, int(spec.get("parallelism") or 1))
    ):
        reason = pending_reason(pods)
    return JobStatus(
        name=meta.get("name", "?"),
        namespace=meta.get("namespace", ""),
        kind="Job",
        state=state,
        age=format_age(meta.get("creationTimestamp"), now),
        roles=[role],
        reason=reason,
    )


def statuses(cluster: Any, namespace: str | None, selector: str | None = None) -> list[JobStatus]:
    """Every prediction Job in ``namespace`` (None: all namespaces), matching ``selector`` too."""
    wanted = f"{SELECTOR},{selector}" if selector else SELECTOR
    out = []
    jobs = cluster.list_objects("batch/v1", "Job", namespace, label_selector=wanted)
    for job in sorted(jobs, key=lambda j: (j["metadata"]["namespace"], j["metadata"]["name"])):
        pods = None
        if job_state(job)[0] in ("Pending", "Running"):
            meta = job["metadata"]
            pods = cluster.list_objects(
                "v1", "Pod", meta["namespace"], label_selector=f"batch.kubernetes.io/job-name={meta['name']}"
            )
        out.append(summarize(job, pods))
    return out


def one(cluster: Any, name: str, namespace: str) -> JobStatus | None:
    """The prediction Job ``name`` (None when there is no such Job)."""
    job = cluster.get("batch/v1", "Job", name, namespace)
    if job is None or LABEL_PREDICTION not in ((job.get("metadata") or {}).get("labels") or {}):
        return None
    return summarize(
        job, cluster.list_objects("v1", "Pod", namespace, label_selector=f"batch.kubernetes.io/job-name={name}")
    )
