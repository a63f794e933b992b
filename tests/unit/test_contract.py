"""The one owner of each concept: the operator contract (jobgen.kubeflow), derived names, gs:// URIs
and the retry policy."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobgen import kubeflow, names, retry
from jobgen.errors import ClusterError
from jobgen.kube import ApiRejected, is_transient
from jobgen.loader import load_spec
from jobgen.render import render
from jobgen.uris import parse_gs
from tests.conftest import REPO


def manifest(name: str) -> dict:
    return render(load_spec(REPO / "jobs" / name))


def test_pytorch_view():
    job = kubeflow.view(manifest("cpu-ddp.yaml"))
    assert job.kind is kubeflow.PYTORCH and job.roles() == ["Master", "Worker"]
    assert job.replicas()[0] == ("Master", 0) and job.primary_replica() == ("Master", 0)
    assert job.pod_name("Worker", 0) == f"{job.name}-worker-0"
    assert job.container("Master")["name"] == "pytorch" and job.port("Master") == 23456
    env = job.operator_env("Worker", 0)
    assert env["MASTER_ADDR"] == f"{job.name}-master-0" and env["RANK"] == "1"
    assert job.find_replica("worker-0") == ("Worker", 0) and job.find_replica("worker-99") is None


def test_tf_view_and_job_name_env():
    m = manifest("tf-mwms.yaml")
    job = kubeflow.view(m)
    assert job.kind is kubeflow.TENSORFLOW and job.kind.container == "tensorflow"
    role, index = job.replicas()[0]
    for r in job.roles():
        env = {e["name"]: e["value"] for e in job.container(r)["env"]}
        # the trainer's lineage reads the job name from here, never from a pod name like <job>-chief-0
        assert env[kubeflow.JOB_NAME_ENV] == job.name and env[kubeflow.JOB_KIND_ENV] == "TFJob"
    assert '"index":0' in (job.tf_config(role, index) or "")


def test_unknown_kind():
    with pytest.raises(ValueError, match="expected one of PyTorchJob, TFJob"):
        kubeflow.view({"kind": "MPIJob"})


@pytest.mark.parametrize(
    ("conditions", "state"),
    [
        ([], "Pending"),
        (["Created"], "Pending"),
        (["Created", "Running"], "Running"),
        (["Running", "Succeeded"], "Succeeded"),
        (["Running", "Failed"], "Failed"),
    ],
)
def test_state_from_conditions(conditions, state):
    obj = {"status": {"conditions": [{"type": c, "status": "True"} for c in conditions]}}
    assert kubeflow.state_of(obj)[0] == state


@settings(max_examples=300)
@given(base=st.text(max_size=120), key=st.text(max_size=200), other=st.text(max_size=200))
def test_derived_names_are_pure_valid_and_distinct(base, key, other):
    name = names.derived(base, key)
    assert name == names.derived(base, key)
    assert names.is_dns1035(name, names.DERIVED_MAX)
    # every child pod name of any role and index up to 10 digits still fits
    assert len(f"{name}-evaluator-{'9' * 10}") <= names.DNS1035_MAX
    if other != key:
        assert names.derived(base, other) != name


def test_gs_uris():
    uri = parse_gs("gs://bucket/a/b/")
    assert (uri.bucket, uri.path, uri.prefix, str(uri.join("c"))) == ("bucket", "a/b/", "a/b/", "gs://bucket/a/b/c")
    assert parse_gs("gs://bucket").prefix == ""
    for bad in ("s3://b/x", "gs://B/x", "gs://b//x", "gs://bucket/x\ny"):
        with pytest.raises(ValueError, match="gs://"):
            parse_gs(bad)


def test_transient_classification():
    assert is_transient(ClusterError("unreachable")) and is_transient(ApiRejected(503, "x", "y"))
    assert is_transient(ApiRejected(429, "TooManyRequests", "slow down"))
    assert not is_transient(ApiRejected(422, "Invalid", "bad")) and not is_transient(ApiRejected(403, "F", "no"))
    assert not is_transient(ValueError("x"))
    # the apiserver's 500 for a server-side apply that does not fit the schema is permanent
    assert not is_transient(
        ApiRejected(
            500,
            "InternalError",
            "failed to create typed patch object (ns/x; "
            "kubeflow.org/v1, Kind=PyTorchJob): .spec.bad: field not declared in schema",
        )
    )


def test_retry_policy_retries_transient_only():
    calls: list[int] = []
    sleeps: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise ApiRejected(503, "Unavailable", "later")
        return "ok"

    assert retry.call(flaky, is_transient, deadline=60) == "ok" and len(calls) == 4
    calls.clear()
    assert retry.policy(is_transient, deadline=60, sleep=sleeps.append)(flaky) == "ok"
    assert len(calls) == 4 and len(sleeps) == 3
    assert all(0 <= s <= retry.MAX_SECONDS for s in sleeps)

    def permanent() -> None:
        calls.append(1)
        raise ApiRejected(422, "Invalid", "bad spec")

    calls.clear()
    with pytest.raises(ApiRejected, match="bad spec"):
        retry.policy(is_transient, deadline=60, sleep=sleeps.append)(permanent)
    assert len(calls) == 1


def test_retry_policy_gives_up_at_the_deadline():
    def down() -> None:
        raise ClusterError("down")

    with pytest.raises(ClusterError, match="down"):
        retry.policy(is_transient, deadline=0.3, initial=0.01, maximum=0.05)(down)
