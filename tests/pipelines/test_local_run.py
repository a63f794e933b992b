"""The compiled pipeline run end to end with kfp.local (SubprocessRunner, this venv): real data
validation against fake-gcs-server, a real PyTorchJob on the local control plane whose pods the pod
runner runs as real DDP training, an independent evaluation of the published model, and the
registry's promotion decision. The registry and the cluster are checked afterwards."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from jobgen import kube
from tests.pipelines.conftest import REPO, local_spec, write_yaml

# kfp.local warns that the (never pulled) local/… images are not "python" images: expected here.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")]
NS = "training"


@pytest.fixture
def env(emulators, local_cluster, monkeypatch, tmp_path):
    """Emulator + kubeconfig env for this process and the component subprocesses; a pod runner."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from jobgen.podrunner import PodRunner

    for key, value in emulators.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("KUBECONFIG", str(local_cluster.kubeconfig))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    gcs = storage.Client(project="test", credentials=AnonymousCredentials())
    suffix = uuid.uuid4().hex[:6]
    buckets = {k: gcs.create_bucket(f"kfp-{k}-{suffix}").name for k in ("data", "models", "ckpt")}
    cluster = kube.connect(None, str(local_cluster.kubeconfig))
    runner = PodRunner(cluster, NS, tmp_path / "pod-logs", cwd=str(REPO), poll=0.3)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()

    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp-root"))
    yield {"gcs": gcs, "buckets": buckets, "cluster": cluster, "runner": runner, "tmp": tmp_path}
    runner.shutdown()
    thread.join(timeout=10)


def write_data(gcs, bucket: str, version: str, n: int = 1200) -> str:
    from trainer import data

    arrays, classes = data.digits(seed=0)
    uri = f"gs://{bucket}/digits/{version}"
    data.write_dataset(uri, {k: v[:n] for k, v in arrays.items()}, classes, shards=4)
    return uri


def compiled(env, name: str, epochs: int = 6):
    """What `jobgen pipeline` writes, loaded back from the IR YAML: the run uses the compiled file."""
    from kfp import components

    from jobgen.pipelines.compile import compile_spec

    b = env["buckets"]
    doc = local_spec(
        name, f"gs://{b['data']}/digits/v1", f"gs://{b['models']}/digits", f"gs://{b['ckpt']}/digits", epochs=epochs
    )
    spec = write_yaml(env["tmp"] / f"{name}.yaml", doc)
    path = compile_spec(spec, image_registry="local", image_tag="dev", output=env["tmp"] / f"{name}-pipeline.yaml")
    return components.load_component_from_file(str(path))


def published(gcs, bucket: str) -> dict[str, dict]:
    """model version → lineage, of the complete versions in the registry."""
    out = {}
    names = {b.name for b in gcs.list_blobs(bucket, prefix="digits/")}
    for n in names:
        if n.endswith("/lineage.json") and n.replace("lineage.json", "_COMPLETE") in names:
            out[n.split("/")[-2]] = json.loads(gcs.bucket(bucket).blob(n).download_as_bytes())
    return out


def test_pipeline_trains_evaluates_and_registers(env):
    from trainer.registry import Registry

    gcs, b = env["gcs"], env["buckets"]
    data_uri = write_data(gcs, b["data"], "v1")
    pipeline = compiled(env, "kfp-e2e")
    t0 = time.monotonic()
    task = pipeline(data_uri=data_uri, epochs=6, poll_seconds=0.5, timeout_seconds=600, delete_policy="Always")
    seconds = time.monotonic() - t0
    decision = json.loads(task.output)
    print(f"pipeline run: {seconds:.1f}s; decision {decision}")

    versions = published(gcs, b["models"])
    assert list(versions) == [decision["version"]]  # exactly one model, the one the train step's job made
    lineage = versions[decision["version"]]
    job_name = lineage["job_name"]
    assert job_name.startswith("kfp-e2e-")
    assert lineage["data"]["uri"].rstrip("/") == data_uri
    assert lineage["world_size"] == 2  # master + worker really trained together
    assert lineage["hyperparameters"]["epochs"] == 6
    metrics = json.loads(gcs.bucket(b["models"]).blob(f"digits/{decision['version']}/metrics.json").download_as_bytes())
    assert abs(metrics["val_accuracy"] - decision["value"]) <= 1e-3  # evaluate's own measurement agrees
    assert decision["value"] > 0.5  # 6 epochs on digits learn something (chance is 0.1)
    latest, _ = Registry(f"gs://{b['models']}/digits").latest()
    assert latest["version"] == decision["version"] and decision["is_latest"]
    # delete_policy=Always: the job is gone from the cluster; its pods really exited 0.
    assert env["cluster"].get_job(job_name, NS) is None
    assert env["runner"].done.get(f"{job_name}-master-0") == 0
    assert env["runner"].done.get(f"{job_name}-worker-0") == 0

    # A second run with a worse model (1 step): registered but not promoted; LATEST stays.
    task2 = pipeline(data_uri=data_uri, epochs=1, lr=0.0001, poll_seconds=0.5, delete_policy="Never")
    second = json.loads(task2.output)
    assert second["version"] != decision["version"]
    assert not second["promoted"] and not second["is_latest"]
    assert second["latest"] == decision["version"]
    latest, _ = Registry(f"gs://{b['models']}/digits").latest()
    assert latest["version"] == decision["version"]
    kept = published(gcs, b["models"])[second["version"]]["job_name"]
    assert env["cluster"].get_job(kept, NS) is not None  # delete_policy=Never keeps it
    env["cluster"].delete_job("PyTorchJob", kept, NS)


def _jobs_named(cluster, prefix: str) -> list[str]:
    return [j["metadata"]["name"] for j in cluster.list_jobs(NS) if j["metadata"]["name"].startswith(prefix)]


def test_bad_runtime_parameters_fail_before_any_job(env, capfd):
    gcs, b = env["gcs"], env["buckets"]
    data_uri = write_data(gcs, b["data"], "v1", n=300)
    pipeline = compiled(env, "kfp-reject")
    cases = [
        ({"lr": 5.0}, "hyperparameters.lr: 5.0 is above the maximum 1.0"),
        ({"epochs": 0}, "hyperparameters.epochs: 0 is below the minimum 1"),
        ({"backend": "nccl"}, "hyperparameters.backend: 'nccl' is not one of ['gloo']"),
        ({"delete_policy": "Sometimes"}, "delete_policy: must be one of Always, OnSuccess, Never"),
    ]
    for bad, reason in cases:
        capfd.readouterr()
        with pytest.raises(RuntimeError, match="Inner task failed: .*train"):
            pipeline(data_uri=data_uri, poll_seconds=0.5, **bad)
        out = "".join(capfd.readouterr())
        assert "rejected before creating the job" in out and reason in out, (bad, out[-3000:])
    assert _jobs_named(env["cluster"], "kfp-reject") == []
    assert published(gcs, b["models"]) == {}


def test_bad_data_fails_validation_before_training(env, capfd):
    gcs, b = env["gcs"], env["buckets"]
    pipeline = compiled(env, "kfp-nodata")
    with pytest.raises(RuntimeError, match="Inner task failed: .*validate-data"):
        pipeline(data_uri=f"gs://{b['data']}/digits/missing")
    assert "digits/missing/manifest.json does not exist" in "".join(capfd.readouterr())
    data_uri = write_data(gcs, b["data"], "v2", n=300)
    shard = next(n.name for n in gcs.list_blobs(b["data"], prefix="digits/v2/") if "train" in n.name)
    gcs.bucket(b["data"]).blob(shard).delete()
    with pytest.raises(RuntimeError, match="Inner task failed: .*validate-data"):
        pipeline(data_uri=data_uri)
    out = "".join(capfd.readouterr())
    assert f"shard {shard.split('/')[-1]} is missing" in out, out[-2000:]
    with pytest.raises(RuntimeError, match="Inner task failed: .*validate-data"):
        pipeline(data_uri=write_data(gcs, b["data"], "v4", n=300), min_examples=10_000)
    assert "fewer than min_examples=10000" in "".join(capfd.readouterr())
    assert _jobs_named(env["cluster"], "kfp-nodata") == []


def test_timeout_fails_the_step_and_deletes_the_job(env, capfd):
    gcs, b = env["gcs"], env["buckets"]
    data_uri = write_data(gcs, b["data"], "v3", n=1200)
    pipeline = compiled(env, "kfp-slow", epochs=200)
    with pytest.raises(RuntimeError, match="Inner task failed: .*train"):
        pipeline(data_uri=data_uri, timeout_seconds=4, poll_seconds=0.5, delete_policy="Always")
    out = "".join(capfd.readouterr())
    assert "did not finish within 4s" in out
    deleted = [line for line in out.splitlines() if "deleted PyTorchJob training/kfp-slow-" in line]
    assert deleted and "state TimedOut" in deleted[0]
    name = deleted[0].split("training/")[1].split()[0]
    assert env["cluster"].get_job(name, NS) is None
    assert published(gcs, b["models"]) == {}  # evaluate/register never ran, nothing was published


def test_retried_train_step_attaches_to_its_job(env):
    """The job's name derives from the run id: a retry of the step (same run) finds the job it
    created instead of training again. The step's function is called directly, twice."""
    from jobgen.pipelines import components

    gcs, b = env["gcs"], env["buckets"]
    data_uri = write_data(gcs, b["data"], "v5", n=600)
    doc = local_spec("kfp-retry", data_uri, f"gs://{b['models']}/digits", f"gs://{b['ckpt']}/digits", epochs=2)
    args = dict(
        spec_json=json.dumps(doc),
        hyperparameters={"epochs": "2"},
        templates={},
        data_uri=data_uri,
        output_uri="",
        checkpoint_uri="",
        namespace=NS,
        run_id=f"run-{uuid.uuid4()}",
        timeout_seconds=300,
        delete_policy="Never",
        poll_seconds=0.5,
    )
    first = components.train(**args)
    job = env["cluster"].get_job(first, NS)
    uid = job["metadata"]["uid"]
    assert job["metadata"]["annotations"]["pipelines.kubeflow.org/run-id"] == args["run_id"]
    second = components.train(**args)
    assert second == first
    assert env["cluster"].get_job(first, NS)["metadata"]["uid"] == uid  # the same object, not a new job
    assert len(published(gcs, b["models"])) == 1  # trained once
    other = components.train(**{**args, "run_id": f"run-{uuid.uuid4()}", "delete_policy": "Always"})
    assert other != first and env["cluster"].get_job(other, NS) is None
    env["cluster"].delete_job("PyTorchJob", first, NS)
