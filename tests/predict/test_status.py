"""`jobgen status` rows of prediction Jobs, and the pod runner's downward-API env (no cluster needed)."""

from __future__ import annotations

import datetime as dt

from jobgen.podrunner import downward_env
from jobgen.predict.status import job_state, summarize
from jobgen.status import status_table

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def job(conditions=(), **status):
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "p-1", "namespace": "ns", "creationTimestamp": "2026-11-30T11:58:00Z"},
        "spec": {"completions": 3, "parallelism": 3},
        "status": {
            "conditions": [{"type": t, "status": "True", "reason": r, "message": m} for t, r, m in conditions],
            **status,
        },
    }


def test_states():
    assert job_state(job())[0] == "Pending"
    assert job_state(job(active=2))[0] == "Running"
    assert job_state(job([("Complete", "CompletionsReached", "")], succeeded=3)) == ("Complete", "")
    state, reason = job_state(
        job([("FailureTarget", "FailedIndexes", "x"), ("Failed", "FailedIndexes", "Job has failed indexes")])
    )
    assert state == "Failed" and reason == "FailedIndexes: Job has failed indexes"


def test_summary_row():
    done = summarize(job([("Complete", "CompletionsReached", "")], succeeded=3), now=NOW)
    assert (done.kind, done.state, done.age, done.roles[0].succeeded, done.roles[0].desired) == (
        "Job",
        "Complete",
        "2m",
        3,
        3,
    )
    failed = summarize(
        job([("Failed", "FailedIndexes", "Job has failed indexes")], failed=3, succeeded=2, failedIndexes="1"), now=NOW
    )
    assert failed.reason == "FailedIndexes: Job has failed indexes (failed indexes 1)"
    table = status_table([done, failed])
    assert "Index:0/3" in table.splitlines()[1] and "Complete" in table


def test_pending_reason_from_pods():
    pods = [
        {
            "metadata": {"name": "p-1-0-abcde"},
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/7 nodes available",
                    }
                ]
            },
        }
    ]
    st = summarize(job(), pods, now=NOW)
    assert st.state == "Pending" and st.reason == "p-1-0-abcde: Unschedulable: 0/7 nodes available"


def test_downward_env_resolves_the_completion_index():
    env = [
        {
            "name": "JOB_COMPLETION_INDEX",
            "valueFrom": {
                "fieldRef": {"fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}
            },
        },
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PLAIN", "value": "x"},
    ]
    pod = {
        "metadata": {
            "name": "p-1-2-xyz",
            "namespace": "ns",
            "uid": "u",
            "labels": {},
            "annotations": {"batch.kubernetes.io/job-completion-index": "2"},
        }
    }
    assert downward_env(pod, {"env": env}) == {"JOB_COMPLETION_INDEX": "2", "POD": "p-1-2-xyz"}
