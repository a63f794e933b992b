"""`jobgen sweep` on the local control plane with real training (pod runner + emulators):
the parallelism limit holds, every trial finishes, and `jobgen status --sweep` ranks by the
metric each trial published to the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
import yaml

from jobgen import kube
from jobgen.podrunner import PodRunner, pod_settings

REPO = Path(__file__).resolve().parents[2]
NS = "training"


@pytest.fixture
def env(local_cluster, emulators, tmp_path, monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    for key, value in emulators.env().items():
        monkeypatch.setenv(key, value)
    gcs = storage.Client(project=emulators.project, credentials=AnonymousCredentials())
    suffix = uuid.uuid4().hex[:6]
    data, models = gcs.create_bucket(f"sweep-data-{suffix}"), gcs.create_bucket(f"sweep-models-{suffix}")
    from trainer import data as datasets

    arrays, classes = datasets.digits(seed=0)
    datasets.write_dataset(f"gs://{data.name}/v1", {k: v[:600] for k, v in arrays.items()}, classes, shards=4)
    labels, annotations = pod_settings()
    spec = yaml.safe_load((REPO / "jobs/cpu-ddp.yaml").read_text())
    spec.update(
        {
            "name": f"sw-{suffix}",
            "command": ["python", "-m", "trainer.train"],
            "labels": labels,
            "podAnnotations": annotations,
            "restartPolicy": "Never",
            "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
            "storage": {"data": f"gs://{data.name}/v1", "output": f"gs://{models.name}/m"},
            "hyperparameters": {
                "lr": {"type": "float", "default": 0.1, "min": 0.0, "max": 1.0},
                "epochs": {"type": "int", "default": 3},
                "batch-size": {"type": "int", "default": 32},
                "backend": {"type": "str", "default": "gloo"},
            },
        }
    )
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    cluster = kube.connect(None, local_cluster.kubeconfig)
    runner = PodRunner(cluster, NS, tmp_path / "logs", cwd=str(REPO), poll=0.2)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    yield {
        "spec": path,
        "gcs": gcs,
        "models": models.name,
        "kubeconfig": local_cluster.kubeconfig,
        "cluster": local_cluster,
    }
    runner.shutdown()
    thread.join(timeout=10)


def jobgen(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "jobgen.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": env["kubeconfig"]},
        timeout=600,
    )


def test_sweep_respects_parallelism_and_ranks_by_registry_metric(env):
    name = f"swp-{uuid.uuid4().hex[:4]}"
    out = jobgen(
        env,
        "sweep",
        str(env["spec"]),
        "--grid",
        "lr=0.001,0.05,0.3",
        "--name",
        name,
        "--parallelism",
        "1",
        "--timeout",
        "400",
    )
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = env["cluster"].get("pytorchjobs", namespace=NS, selector=f"jobgen.io/sweep={name}")["items"]
    assert len(jobs) == 3
    assert all(any(c["type"] == "Succeeded" and c["status"] == "True" for c in j["status"]["conditions"]) for j in jobs)
    # parallelism 1: each trial was resumed only after the previous one finished
    assert out.stdout.count("resumed") == 2
    order = [line.split(":")[0].strip() for line in out.stdout.splitlines() if line.endswith(": resumed")]
    lines = out.stdout.splitlines()
    for resumed in order:
        idx = lines.index(f"  {resumed}: resumed")
        finished_before = [ln for ln in lines[:idx] if ln.endswith(": Succeeded")]
        assert len(finished_before) == order.index(resumed) + 1

    ranked = jobgen(env, "status", "--sweep", name, "-n", NS, "-o", "json")
    assert ranked.returncode == 0, ranked.stderr
    rows = json.loads(ranked.stdout)
    # the ranking agrees with the registry, read here independently
    published = {}
    for blob in env["gcs"].list_blobs(env["models"], prefix="m/"):
        if blob.name.endswith("/lineage.json"):
            job = json.loads(blob.download_as_bytes())["job_name"]
            metrics = json.loads(
                env["gcs"]
                .bucket(env["models"])
                .blob(blob.name.replace("lineage.json", "metrics.json"))
                .download_as_bytes()
            )
            published[job] = metrics["val_accuracy"]
    assert set(published) == {r["name"] for r in rows}
    assert [r["name"] for r in rows] == sorted(published, key=lambda j: -published[j])
    assert [r["value"] for r in rows] == sorted(published.values(), reverse=True)
    assert {json.dumps(r["params"]) for r in rows} == {'{"lr": 0.001}', '{"lr": 0.05}', '{"lr": 0.3}'}
    table = jobgen(env, "status", "--sweep", name, "-n", NS)
    assert table.stdout.splitlines()[1].split()[0] == "1"


def test_rerun_is_idempotent_and_unknown_sweep_is_an_error(env):
    name = f"swq-{uuid.uuid4().hex[:4]}"
    args = ["sweep", str(env["spec"]), "--grid", "epochs=1,2", "--name", name, "--parallelism", "1", "--detach"]
    first = jobgen(env, *args)
    assert first.returncode == 0, first.stderr
    uids = {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in env["cluster"].get("pytorchjobs", namespace=NS, selector=f"jobgen.io/sweep={name}")["items"]
    }
    assert len(uids) == 2
    second = jobgen(env, *args)
    assert second.returncode == 0, second.stderr
    again = {
        j["metadata"]["name"]: j["metadata"]["uid"]
        for j in env["cluster"].get("pytorchjobs", namespace=NS, selector=f"jobgen.io/sweep={name}")["items"]
    }
    assert again == uids
    missing = jobgen(env, "status", "--sweep", "no-such-sweep", "-n", NS)
    assert missing.returncode == 2 and "no jobs of sweep 'no-such-sweep'" in missing.stderr
