"""The prediction target over the watcher's fakes: one Indexed Job per input version, exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen.errors import UserError
from jobgen.watcher.config import load_jobs, load_predictions, parse_config
from tests.watcher.test_units import note

pytest.importorskip("prometheus_client", reason="prometheus-client is missing: pip install -e '.[watcher]'")

REPO = Path(__file__).resolve().parents[2]
STATE = {"bucket": "state-bkt"}
SPEC = {
    "kind": "BatchPrediction",
    "name": "mnist-predict",
    "image": "trainer:test",
    "input": "gs://inputs-bkt/batches/*.npy",
    "model": "gs://models-bkt/mnist",
    "output": "gs://preds-bkt/mnist",
    "parallelism": 3,
}


def config(tmp_path: Path, jobs: dict[str, Any] | None = None, **trigger: Any) -> tuple[Any, Path]:
    path = tmp_path / "w.yaml"
    (tmp_path / "predict.yaml").write_text(yaml.safe_dump(SPEC))
    doc = {
        "state": STATE,
        "jobs": jobs or {"p": {"file": "predict.yaml"}, "train": {"file": str(REPO / "jobs" / "cpu-ddp.yaml")}},
        "sources": {
            "pubsub": {"subscription": "projects/proj-x/subscriptions/sub"},
            "requests": {"subscription": "projects/proj-x/subscriptions/req"},
        },
        "retry": {"initialSeconds": 0.001, "maxSeconds": 0.01},
        "triggers": [{"name": "inputs", "job": "p", "bucket": "inputs-bkt", "prefix": "batches/", **trigger}],
    }
    path.write_text(yaml.safe_dump(doc))
    return parse_config(doc, str(path)), path


def make_app(tmp_path: Path, **trigger: Any) -> Any:
    from jobgen.watcher.app import App
    from jobgen.watcher.state import MemBlobs
    from tests.watcher.fakes import FakeCluster, ScriptedBlobs

    cfg, path = config(tmp_path, **trigger)
    cfg, predictions = load_predictions(cfg, path)
    dead: list[tuple[str, str]] = []
    app: Any = App(
        cfg,
        load_jobs(cfg, path),
        FakeCluster(),
        ScriptedBlobs(MemBlobs()),
        dead_letter=lambda d, a, reason, detail: dead.append((reason, detail)),
        predictions=predictions,
    )
    app.dead = dead
    return app


def deliver(app: Any, data_attrs: tuple[bytes, dict[str, str]]) -> Any:
    from jobgen.watcher.sensor.sensor import Delivery

    return app.sensor.on_notification(*data_attrs, Delivery("pubsub", time.monotonic()))


def test_config_splits_training_and_prediction_jobs(tmp_path: Path) -> None:
    cfg, path = config(tmp_path)
    assert cfg.triggers[0].concurrency == "Forbid"  # the training default, before resolution
    resolved, predictions = load_predictions(cfg, path)
    assert set(predictions) == {"p"} and predictions["p"].indexes == 3
    assert set(load_jobs(resolved, path)) == {"train"}
    assert resolved.triggers[0].concurrency == "Allow"


def test_inline_prediction_spec(tmp_path: Path) -> None:
    cfg, path = config(tmp_path, jobs={"p": {"spec": SPEC}})
    _, predictions = load_predictions(cfg, path)
    assert predictions["p"].name == "mnist-predict" and load_jobs(cfg, path) == {}


@pytest.mark.parametrize(
    "trigger,jobs,field,words",
    [
        ({"concurrency": "Forbid"}, None, "triggers[0].concurrency", "expected Allow"),
        ({"concurrency": "Replace"}, None, "triggers[0].concurrency", "expected Allow"),
        ({"params": {"lr": 0.1}}, None, "triggers[0].params", "no hyperparameters"),
        (
            {},
            {"p": {"file": "predict.yaml", "pipeline": {"host": "http://kfp", "package": "p.yaml"}}},
            "jobs.p.pipeline",
            "cannot run as a pipeline",
        ),
        ({}, {"p": {"spec": {**SPEC, "parallelism": 0}}}, "parallelism", "greater than or equal to 1"),
    ],
)
def test_bad_prediction_config_names_the_field(
    tmp_path: Path, trigger: dict[str, Any], jobs: dict[str, Any] | None, field: str, words: str
) -> None:
    cfg, path = config(tmp_path, jobs=jobs, **trigger)
    with pytest.raises(UserError) as err:
        load_predictions(cfg, path)
    text = str(err.value)
    assert field in text and words in text, text


def test_one_indexed_job_per_input_version(tmp_path: Path) -> None:
    from jobgen.watcher.app import Outcome

    app = make_app(tmp_path)
    for _ in range(3):  # the same notification three times
        assert deliver(app, note("batches/b1/_SUCCESS", 11, bucket="inputs-bkt")) is Outcome.ACK
    (job,) = app.api.jobs.values()
    assert app.api.created == [job["metadata"]["name"]]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["completions"] == 3
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--input=gs://inputs-bkt/batches/b1" in args and "--glob=*.npy" in args
    meta = job["metadata"]
    assert meta["labels"]["prediction.jobgen.io/trigger"] == "inputs"
    assert meta["labels"]["retrain.jobgen.io/generation"] == "11"
    assert meta["annotations"]["prediction.jobgen.io/object"] == "gs://inputs-bkt/batches/b1/_SUCCESS"
    assert meta["annotations"]["prediction.jobgen.io/generation"] == "11"
    assert meta["finalizers"] == []  # released once the claim existed
    assert [e[1] for e in app.api.events] == ["PredictionTriggered"]
    claim = app.stores.claims.get("inputs", meta["annotations"]["prediction.jobgen.io/key"])
    assert claim is not None and claim.kind == "Job" and claim.uid == meta["uid"] and claim.released
    # Another version is another Job; an older version arriving late is still predicted (Allow).
    assert deliver(app, note("batches/b3/_SUCCESS", 30, bucket="inputs-bkt")) is Outcome.ACK
    assert deliver(app, note("batches/b2/_SUCCESS", 20, bucket="inputs-bkt")) is Outcome.ACK
    assert len(app.api.created) == 3 and len(app.api.jobs) == 3
    # A restart forgets memory and the TTL deleted the Jobs: the claims still dedupe.
    app.sensor.done = type(app.sensor.done)(10)
    for name in list(app.api.jobs):
        app.api.finish(name, ttl_delete=True)
    assert deliver(app, note("batches/b1/_SUCCESS", 11, bucket="inputs-bkt")) is Outcome.ACK
    assert not app.api.jobs and len(app.api.created) == 3


def test_crash_between_create_and_claim_recovers_without_duplicate(tmp_path: Path) -> None:
    from jobgen.watcher.app import Outcome

    app = make_app(tmp_path)
    app.stores.blobs.crash_creates = 1  # the process dies right before writing the claim
    assert deliver(app, note("batches/b1/_SUCCESS", 5, bucket="inputs-bkt")) is Outcome.ACK
    assert app.dead and app.dead[0][0] == "internal"  # this delivery was dead-lettered...
    (name,) = app.api.jobs
    app.api.finish(name, ttl_delete=True)
    assert name in app.api.jobs  # ...but the Job is held by its finalizer
    assert deliver(app, note("batches/b1/_SUCCESS", 5, bucket="inputs-bkt")) is Outcome.ACK
    assert name not in app.api.jobs and app.api.created == [name]  # recorded, released, TTL-deleted


def test_name_collision_is_dead_lettered_not_deduped(tmp_path: Path) -> None:
    from jobgen.watcher.app import Outcome

    app = make_app(tmp_path)
    assert deliver(app, note("batches/b1/_SUCCESS", 5, bucket="inputs-bkt")) is Outcome.ACK
    (job,) = app.api.jobs.values()
    job["metadata"]["annotations"]["prediction.jobgen.io/key"] = '["gcs","x","y",1]'  # another key, same name
    app.sensor.done = type(app.sensor.done)(10)
    app.stores.blobs.inner.objects.clear()  # no claim: the create runs into the foreign Job
    assert deliver(app, note("batches/b1/_SUCCESS", 5, bucket="inputs-bkt")) is Outcome.ACK
    assert [r for r, _ in app.dead] == ["name_collision"] and app.api.created == [job["metadata"]["name"]]


def test_unusable_version_is_dead_lettered(tmp_path: Path) -> None:
    """A version whose prefix is no usable input URI (a glob character): rendering fails for good."""
    from jobgen.watcher.app import Outcome

    app = make_app(tmp_path)
    assert deliver(app, note("batches/b*1/_SUCCESS", 5, bucket="inputs-bkt")) is Outcome.ACK
    assert [r for r, _ in app.dead] == ["render"] and not app.api.jobs
    assert "glob character" in app.dead[0][1]


def test_retrain_request_for_a_prediction_job_is_rejected(tmp_path: Path) -> None:
    from jobgen.watcher.app import Outcome
    from jobgen.watcher.sensor.sensor import Delivery

    app = make_app(tmp_path)
    assert app.sensor.on_request(b'{"job": "p"}', {}, Delivery("requests")) is Outcome.ACK
    assert app.dead and "prediction job" in app.dead[0][1] and not app.api.jobs


def test_kube_adapter_routes_job_kind_to_batch_v1() -> None:
    from jobgen.watcher.targets.kube import KubeAdapter, api_version_of

    calls: list[tuple[Any, ...]] = []

    class Cluster:
        def get(self, *a: Any) -> dict[str, Any]:
            calls.append(("get", *a))
            return {"metadata": {"name": a[2], "finalizers": ["retrain.jobgen.io/claim"], "resourceVersion": "7"}}

        def patch(self, *a: Any) -> dict[str, Any]:
            calls.append(("patch", *a))
            return {}

        def delete(self, *a: Any) -> bool:
            calls.append(("delete", *a))
            return True

    api = KubeAdapter(Cluster(), "ns")  # type: ignore[arg-type]
    api.remove_finalizer("Job", "p-1", "retrain.jobgen.io/claim")
    api.delete_job("Job", "p-1")
    api.get_job("PyTorchJob", "t-1")
    assert [c[:3] for c in calls] == [
        ("get", "batch/v1", "Job"),
        ("patch", "batch/v1", "Job"),
        ("delete", "batch/v1", "Job"),
        ("get", "kubeflow.org/v1", "PyTorchJob"),
    ]
    assert api_version_of("TFJob") == "kubeflow.org/v1"


def test_watch_cli_rejects_a_bad_prediction_trigger_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    _, path = config(tmp_path, concurrency="Replace")
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert str(path) in line and "triggers[0].concurrency" in line and "expected Allow" in line
