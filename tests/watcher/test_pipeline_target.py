"""A watcher job with a `pipeline` target starts one Kubeflow Pipelines run per data version
(through the real kfp.Client, against the loopback stand-in of the KFP REST API from
tests/pipelines/test_runs.py: no KFP API server can run here) and no bare job."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest
import yaml

from jobgen.pipelines.compile import compile_spec
from tests.pipelines.test_runs import KfpStandIn, posts
from tests.watcher.conftest import wait_for


@pytest.fixture
def kfp():
    store = {"requests": [], "experiments": [], "runs": []}
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (KfpStandIn,), {"store": store}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", store
    server.shutdown()
    server.server_close()


def test_one_pipeline_run_per_data_version(case_factory, kfp):
    host, store = kfp
    case = case_factory(markers=["_SUCCESS"], params={"epochs": 2})
    job = yaml.safe_load((case.dir / "job.yaml").read_text())
    job["storage"] = {"output": "gs://models/mnist", "checkpoints": "gs://checkpoints/mnist"}
    (case.dir / "job.yaml").write_text(yaml.safe_dump(job))
    package = compile_spec(str(case.dir / "job.yaml"), output=case.dir / "pipeline.yaml", image_tag="t")
    cfg = yaml.safe_load(case.config.read_text())
    cfg["jobs"]["train"]["pipeline"] = {"host": host, "package": "pipeline.yaml", "experiment": "retrain"}
    case.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert package.exists()
    watcher = case.start()

    generation = case.upload("mnist/v1/_SUCCESS")
    try:
        runs = wait_for(lambda: posts(store, "/apis/v2beta1/runs") or None, 60, "a pipeline run")
    except AssertionError:
        raise AssertionError(watcher.log_text()[-3000:] + repr(store["requests"][-5:])) from None
    assert len(runs) == 1
    run = runs[0]
    assert str(generation) in run["display_name"] and "v1" in run["display_name"]
    args = run["runtime_config"]["parameters"]
    assert args["data_uri"] == f"gs://{case.bucket}/mnist/v1/" and args["epochs"] == 2

    # The same data version notified again (new message ID), and a second version.
    case.publish(
        case.tap_messages(1)[0].data,
        **{
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": case.bucket,
            "objectId": "mnist/v1/_SUCCESS",
            "objectGeneration": str(generation),
        },
    )
    case.upload("mnist/v2/_SUCCESS")
    wait_for(lambda: len(posts(store, "/apis/v2beta1/runs")) == 2 or None, 60, "the second version's run")
    wait_for(lambda: watcher.metric("retrain_events_deduped_total") >= 1 or None, 30, "the dedupe")
    assert len(posts(store, "/apis/v2beta1/runs")) == 2
    assert case.jobs() == []  # a pipeline target creates runs, never bare jobs
    assert watcher.metric("retrain_jobs_created_total") == 2
    case.stop_all()


def test_missing_pipeline_package_is_a_config_error(tmp_path):
    import subprocess
    import sys

    from tests.watcher.conftest import REPO

    (tmp_path / "job.yaml").write_text((REPO / "jobs/cpu-ddp.yaml").read_text())
    (tmp_path / "w.yaml").write_text(
        yaml.safe_dump(
            {
                "state": {"bucket": "my-state"},
                "jobs": {
                    "train": {"file": "job.yaml", "pipeline": {"host": "http://127.0.0.1:9", "package": "nope.yaml"}}
                },
                "triggers": [{"name": "data", "job": "train", "bucket": "my-data"}],
                "sources": {"pubsub": {"subscription": "projects/my-project/subscriptions/retrain-gcs"}},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(tmp_path / "w.yaml")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "jobs.train.pipeline.package" in proc.stderr and "jobgen pipeline SPEC" in proc.stderr
