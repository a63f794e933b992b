"""Summaries of PyTorchJob/TFJob objects for `jobgen status`: state, replicas, age and why."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from jobgen.kubeflow import REPLICA_TYPE_LABEL, state_of, view


@dataclass
class RoleStatus:
    role: str
    desired: int
    ready: int = 0
    active: int = 0
    succeeded: int = 0
    failed: int = 0


@dataclass
class JobStatus:
    name: str
    namespace: str
    kind: str
    state: str
    age: str
    roles: list[RoleStatus] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_age(created: str | None, now: dt.datetime | None = None) -> str:
    """kubectl-style age: 42s, 5m, 3h, 2d."""
    if not created:
        return "<unknown>"
    start = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
    seconds = int(((now or dt.datetime.now(dt.UTC)) - start).total_seconds())
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _pod_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def exit_codes(pods: list[dict[str, Any]]) -> str:
    """``pod: exit code N (Reason)`` for every container that ended in failure."""
    found = []
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term and term.get("exitCode"):
                why = f" {term['reason']}" if term.get("reason") not in (None, "Error") else ""
                found.append(f"{name}: exit code {term['exitCode']}{why}")
    return ", ".join(found)


def pending_reason(pods: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> str:
    """Why a job's pods are not running: unschedulable, image pulls, crash loops, or no pods yet."""
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        status = pod.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return f"{name}: {cond.get('reason', 'Unschedulable')}: {cond.get('message', '')}".strip()
        for cs in status.get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if waiting and waiting.get("reason") not in (None, "ContainerCreating"):
                return f"{name}: {waiting.get('reason')}: {waiting.get('message', '')}".rstrip(": ")
    if not pods:
        for ev in reversed(events or []):
            if ev.get("type") == "Warning":
                return f"{ev.get('reason')}: {ev.get('message')}"
        return "no pods created yet"
    return ""


def summarize(
    job: dict[str, Any],
    pods: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    now: dt.datetime | None = None,
) -> JobStatus:
    meta = job.get("metadata") or {}
    status = job.get("status") or {}
    state, cond = state_of(job)
    replica_status = status.get("replicaStatuses") or {}
    pods = pods or []
    roles = []
    typed = view(job)
    for role in typed.replica_specs:
        rs = replica_status.get(role) or {}
        ready = sum(
            1
            for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get(REPLICA_TYPE_LABEL) == role.lower() and _pod_ready(p)
        )
        roles.append(
            RoleStatus(
                role=role,
                desired=typed.replica_count(role),
                ready=ready,
                active=int(rs.get("active", 0)),
                succeeded=int(rs.get("succeeded", 0)),
                failed=int(rs.get("failed", 0)),
            )
        )
    reason = ""
    if state in ("Failed", "Restarting") and cond:
        reason = f"{cond.get('reason', '')}: {cond.get('message', '')}".strip(": ")
        exits = exit_codes(pods)
        if exits:
            reason += f" ({exits})"
    elif state == "Pending" and not status:
        reason = "no status yet: is the training-operator running?"
    elif state in ("Pending", "Running") and any(r.ready < r.desired for r in roles):
        reason = pending_reason(pods, events)
    return JobStatus(
        name=meta.get("name", "?"),
        namespace=meta.get("namespace", ""),
        kind=job.get("kind", "?"),
        state=state,
        age=format_age(meta.get("creationTimestamp"), now),
        roles=roles,
        reason=reason,
    )


def table(rows: list[list[str]]) -> str:
    """Left-aligned columns separated by three spaces, as kubectl prints them."""
    if not rows:
        return ""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def status_table(statuses: list[JobStatus], wide_reason: bool = True) -> str:
    rows = [["NAME", "KIND", "STATE", "READY", "SUCCEEDED", "FAILED", "AGE", "REASON"]]
    for st in statuses:
        ready = " ".join(f"{r.role}:{r.ready}/{r.desired}" for r in st.roles) or "-"
        rows.append(
            [
                st.name,
                st.kind,
                st.state,
                ready,
                str(sum(r.succeeded for r in st.roles)),
                str(sum(r.failed for r in st.roles)),
                st.age,
                st.reason if wide_reason else st.reason[:60],
            ]
        )
    return table(rows)
