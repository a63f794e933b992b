"""Batch prediction end to end on the local control plane: `jobgen predict` → a batch/v1 Indexed Job →
the real Job controller creates one pod per index → the pod runner runs each as `python -m trainer.predict`
(JOB_COMPLETION_INDEX from the downward API) against fake-gcs-server → the Job is Complete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen import kube
from jobgen.localcluster.testing import wait_for
from jobgen.podrunner import PodRunner, pod_settings
from jobgen.predict import load
from jobgen.predict.labels import LABEL_PREDICTION
from jobgen.predict.trigger import create_once, manifest_for_data

from .conftest import REPO, generations, publish, read_jsonl, require_torch, write_inputs

require_torch()

PAUSING = "tests/predict/fixtures/pausing_predict.py"


@pytest.fixture
def cluster_ns(local_cluster: Any, tmp_path: Path) -> Any:
    ns = local_cluster.create_namespace("pred")
    cluster = kube.connect(None, local_cluster.kubeconfig)
    runner = PodRunner(cluster, ns, tmp_path / "pod-logs", cwd=str(REPO), poll=0.2)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield cluster, ns, runner
    runner.shutdown()
    thread.join(timeout=10)


def spec_file(tmp_path: Path, buckets: dict[str, str], ns: str, gcs_env: dict[str, str], **changes: Any) -> Path:
    labels, annotations = pod_settings()
    doc: dict[str, Any] = {
        "kind": "BatchPrediction",
        "name": "digits-predict",
        "namespace": ns,
        "image": "local/trainer:dev",  # never pulled: the pod runner runs the command here
        "input": f"gs://{buckets['inputs']}/batch/*.np[yz]",
        "model": {"uri": f"gs://{buckets['models']}/mnist"},
        "output": f"gs://{buckets['preds']}/out",
        "batchSize": 4,
        "device": "cpu",
        "parallelism": 3,
        "backoffLimitPerIndex": 2,
        "labels": labels,
        "podAnnotations": annotations,
        "env": {**gcs_env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
    }
    doc.update(changes)
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def jobgen(kubeconfig: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    return subprocess.run(
        [sys.executable, "-m", "jobgen.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )


def job_of(local_cluster: Any, name: str, ns: str) -> dict[str, Any]:
    job: dict[str, Any] = local_cluster.get("job", name, ns)
    return job


def finished(local_cluster: Any, name: str, ns: str) -> dict[str, Any] | None:
    job = job_of(local_cluster, name, ns)
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
            return job
    return None


def state(job: dict[str, Any]) -> str:
    return next(c["type"] for c in job["status"]["conditions"] if c["type"] in ("Complete", "Failed"))


def output_names(storage: Any, bucket: str, prefix: str) -> set[str]:
    return {b.name[len(prefix) :] for b in storage.list_blobs(bucket, prefix=prefix)}


def test_input_batch_to_a_complete_indexed_job(local_cluster, cluster_ns, storage, buckets, gcs_env, tmp_path):
    cluster, ns, runner = cluster_ns
    publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    inputs = write_inputs(storage, buckets["inputs"], "batch", 8, rows=6)
    storage.bucket(buckets["inputs"]).blob("batch/broken.npy").upload_from_string(b"\x93NUMPY not really")
    path = spec_file(tmp_path, buckets, ns, gcs_env)

    first = jobgen(local_cluster.kubeconfig, "predict", str(path))
    assert first.returncode == 0, first.stderr
    name = first.stdout.split()[0].split("/", 1)[1]
    # A duplicate submission: the same input names the same Job; nothing new is created.
    again = jobgen(local_cluster.kubeconfig, "predict", str(path))
    assert again.returncode == 0 and again.stdout == first.stdout, again.stderr
    jobs = local_cluster.get("jobs", namespace=ns, selector=LABEL_PREDICTION)["items"]
    assert [j["metadata"]["name"] for j in jobs] == [name]
    spec = job_of(local_cluster, name, ns)["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == 3 and spec["parallelism"] == 3

    job = wait_for(lambda: finished(local_cluster, name, ns), 240, f"Job {name} to finish", interval=1)
    assert state(job) == "Complete", json.dumps(job["status"])
    assert job["status"]["succeeded"] == 3 and job["status"].get("failed", 0) == 0
    assert job["status"]["completedIndexes"] == "0-2"
    pods = local_cluster.get("pods", namespace=ns, selector=f"batch.kubernetes.io/job-name={name}")["items"]
    indexes = sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in pods)
    assert indexes == ["0", "1", "2"] and set(runner.done.values()) == {0}

    out = f"out/{name}/"
    names = output_names(storage, buckets["preds"], out)
    for inp in inputs:
        assert f"predictions/{inp}.jsonl" in names and f"raw/{inp}.npz" in names
        assert len(read_jsonl(storage, buckets["preds"], f"{out}predictions/{inp}.jsonl")) == 6
    assert "quarantine/broken.npy.json" in names and "_SUCCESS" in names
    manifest = json.loads(storage.bucket(buckets["preds"]).blob(f"{out}manifest.json").download_as_bytes())
    assert manifest["counts"] == {"inputs": 9, "predicted": 8, "quarantined": 1, "examples": 48}
    assert manifest["model"]["version"] == "v1" and manifest["job"] == name
    assert manifest["quarantined"][0]["name"] == "broken.npy"

    status = jobgen(local_cluster.kubeconfig, "status", "-n", ns)
    assert status.returncode == 0, status.stderr
    row = next(line for line in status.stdout.splitlines() if line.startswith(name))
    assert row.split()[1:4] == ["Job", "Complete", "Index:0/3"] and row.split()[4] == "3", row
    one = json.loads(jobgen(local_cluster.kubeconfig, "status", name, "-n", ns, "-o", "json").stdout)
    assert one["state"] == "Complete" and one["roles"][0]["succeeded"] == 3

    # The watcher's path: a notification for the batch (and its redelivery) creates at most one Job.
    marker = storage.bucket(buckets["inputs"]).blob("batch/_SUCCESS")
    marker.upload_from_string(b"")
    marker.reload()
    pspec = load.load(path)
    data_uri = f"gs://{buckets['inputs']}/batch"
    m1 = manifest_for_data(pspec, data_uri, buckets["inputs"], "batch/_SUCCESS", marker.generation, trigger="t")
    m2 = manifest_for_data(pspec, data_uri, buckets["inputs"], "batch/_SUCCESS", marker.generation, trigger="t")
    assert m1 == m2 and m1["metadata"]["name"] != name
    for m in (m1, m2):
        m["spec"]["suspend"] = True  # only its creation matters here: no pods
    assert create_once(cluster, m1) is True
    assert create_once(cluster, m2) is False
    jobs = local_cluster.get("jobs", namespace=ns, selector=LABEL_PREDICTION)["items"]
    assert sorted(j["metadata"]["name"] for j in jobs) == sorted([name, m1["metadata"]["name"]])


def test_a_killed_index_is_retried_and_no_output_is_written_twice(
    local_cluster, cluster_ns, storage, buckets, gcs_env, tmp_path
):
    _, ns, runner = cluster_ns
    publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    inputs = write_inputs(storage, buckets["inputs"], "batch", 12, rows=3)
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {**gcs_env, "OMP_NUM_THREADS": "1", "PAUSE_INDEX": "1", "PAUSE_AFTER": "2", "PAUSE_DIR": str(pause)}
    path = spec_file(
        tmp_path,
        buckets,
        ns,
        gcs_env,
        name="killed-predict",
        command=["python", PAUSING],
        args=["--writers=1"],
        env=env,
    )
    proc = jobgen(local_cluster.kubeconfig, "predict", str(path))
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.split()[0].split("/", 1)[1]
    marker = pause / "paused"
    wait_for(marker.exists, 180, "index 1 to pause after 2 outputs")
    prefix = f"out/{name}/predictions/"
    before = generations(storage, buckets["preds"], prefix)
    share = sorted(inputs)[1::3]  # index 1 of 3
    done_by_1 = [n for n in share if f"{prefix}{n}.jsonl" in before]
    assert len(done_by_1) == 2  # killed mid-share: 2 of its 4 inputs written
    os.kill(int(marker.read_text()), signal.SIGKILL)

    job = wait_for(lambda: finished(local_cluster, name, ns), 240, f"Job {name} to finish", interval=1)
    assert state(job) == "Complete", json.dumps(job["status"])
    assert job["status"]["failed"] == 1 and job["status"]["succeeded"] == 3  # one retry of index 1
    assert sorted(runner.done.values()) == [0, 0, 0, 137]
    after = generations(storage, buckets["preds"], prefix)
    assert {k: after[k] for k in before} == before  # nothing written twice: generations unchanged
    assert len(after) == len(inputs)
    retry_log = next(
        (tmp_path / "pod-logs" / f"{pod}.log").read_text()
        for pod, code in runner.done.items()
        if code == 0 and "2 skipped (already done)" in (tmp_path / "pod-logs" / f"{pod}.log").read_text()
    )
    assert "index 1: 4 inputs, 2 skipped (already done), 2 predicted" in retry_log
    manifest = json.loads(storage.bucket(buckets["preds"]).blob(f"out/{name}/manifest.json").download_as_bytes())
    assert manifest["counts"]["predicted"] == 12


def test_latest_moving_mid_job_leaves_the_job_on_one_version(
    local_cluster, cluster_ns, storage, buckets, gcs_env, tmp_path
):
    _, ns, runner = cluster_ns
    models = f"gs://{buckets['models']}/mnist"
    publish(models, "v1", seed=1, value=0.5)
    inputs = write_inputs(storage, buckets["inputs"], "batch", 6, rows=2)
    pause = tmp_path / "pause"
    pause.mkdir()
    env = {
        **gcs_env,
        "OMP_NUM_THREADS": "1",
        "PAUSE_INDEX": "0",
        "PAUSE_AFTER": "1",
        "PAUSE_DIR": str(pause),
        "PAUSE_UNTIL": "resume",
    }
    # One pod at a time: indexes 1 and 2 start only after index 0 finished, i.e. after LATEST moved.
    path = spec_file(
        tmp_path,
        buckets,
        ns,
        gcs_env,
        name="moving-predict",
        command=["python", PAUSING],
        args=["--writers=1"],
        env=env,
        parallelism=1,
        completions=3,
    )
    proc = jobgen(local_cluster.kubeconfig, "predict", str(path))
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.split()[0].split("/", 1)[1]
    wait_for((pause / "paused").exists, 180, "index 0 to pause")
    publish(models, "v2", seed=2, value=0.9)  # LATEST moves to v2 mid-job
    from trainer.registry import Registry

    assert Registry(models).latest()[0]["version"] == "v2"
    (pause / "resume").write_text("")
    job = wait_for(lambda: finished(local_cluster, name, ns), 240, f"Job {name} to finish", interval=1)
    assert state(job) == "Complete", json.dumps(job["status"])
    for inp in inputs:
        lines = read_jsonl(storage, buckets["preds"], f"out/{name}/predictions/{inp}.jsonl")
        assert {line["model_version"] for line in lines} == {"v1"}
    manifest = json.loads(storage.bucket(buckets["preds"]).blob(f"out/{name}/manifest.json").download_as_bytes())
    assert manifest["model"]["version"] == "v1"
    logs = [(tmp_path / "pod-logs" / f"{pod}.log").read_text() for pod in runner.done]
    assert sum("plan created by this index" in log for log in logs) == 1
    assert sum("plan of index 0" in log for log in logs) == 2


def test_demo_helper_lands_a_batch_and_summarizes(local_cluster, cluster_ns, storage, buckets, gcs_env, tmp_path):
    import numpy as np

    from jobgen.predict.demo import run_after_promotion

    cluster, ns, _ = cluster_ns
    v1 = publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(30, 16)).astype(np.float32)
    y = v1.model(require_torch().from_numpy(x)).argmax(1).numpy()  # labels the model gets right
    labels, annotations = pod_settings()
    said: list[str] = []
    summary = run_after_promotion(
        cluster, storage, models_uri=f"gs://{buckets['models']}/mnist", input_bucket=buckets["inputs"],
        input_prefix="landed/b1", output=f"gs://{buckets['preds']}/demo", namespace=ns, arrays={"x": x, "y": y},
        pod_labels=labels, pod_annotations=annotations, env=gcs_env, timeout=240, say=said.append,
    )  # fmt: skip
    assert summary.state == "Complete", said
    assert summary.model_version == "v1"
    assert summary.counts == {"inputs": 4, "predicted": 3, "quarantined": 1, "examples": 30}
    assert summary.accuracy == 1.0 and len(summary.samples) == 5
    assert summary.quarantined[0]["name"] == "corrupt.npy"
    assert any("duplicate submission created nothing" in line for line in said)
    jobs = local_cluster.get("jobs", namespace=ns, selector=LABEL_PREDICTION)["items"]
    assert [j["metadata"]["name"] for j in jobs] == [summary.job]
    text = summary.table()
    assert "v1" in text and "corrupt.npy" in text and "sample predictions" in text
