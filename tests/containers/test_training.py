"""The parts users deploy, running for real on the real node: the watcher chart (helm), the PyTorchJob it
creates for a GCS upload (2-pod DDP over the pod network), preemption by pod deletion with exact resume,
the chart's CronJob, and a TFJob over TF_CONFIG."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from jobgen.emulators import Emulators
from jobgen.loader import load_spec
from jobgen.localcluster.containers_demo import BUCKETS, PREFIX, RELEASE, ContainersLoop, job_spec
from jobgen.localcluster.realnode import IMAGES, NODE_NAME, TRAINING_NAMESPACE
from jobgen.localcluster.testing import LocalClusterHandle, wait_for
from jobgen.render import render as render_spec
from tests.conftest import preserved_environ

NS = TRAINING_NAMESPACE
WATCHER = f"{RELEASE}-retrain-watcher"


@pytest.fixture(scope="module")
def loop(real_cluster: LocalClusterHandle, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainersLoop]:
    lp = ContainersLoop(tmp_path_factory.mktemp("loop"), log=print, cluster=real_cluster.cluster)
    with preserved_environ():  # start_emulators exports the emulators' variables into this process
        try:
            lp.start_emulators()
            lp.install_watcher(epochs=2, schedule=True)
            yield lp
        finally:
            Emulators(lp.state / "emulators").down()


def pods(cluster: LocalClusterHandle, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("pods", namespace=NS, selector=selector)["items"]
    return items


def render(doc: dict[str, Any], tmp_path: Path, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest jobgen renders for a spec (its own validation included)."""
    path = tmp_path / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump({**doc, "namespace": NS, "serviceAccount": "jobgen-trainer"}))
    return render_spec(load_spec(path), params)


def test_the_watcher_runs_as_a_restricted_pod_with_passing_probes(loop, real_cluster):
    [pod] = pods(real_cluster, "app.kubernetes.io/name=retrain-watcher,app.kubernetes.io/component!=scheduler")
    assert pod["spec"]["nodeName"] == NODE_NAME
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
    assert ready["Ready"] == "True", pod["status"]
    [status] = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status
    assert status["image"].endswith(IMAGES["watcher"].split("/", 1)[1])
    sc = pod["spec"]["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert pod["spec"]["serviceAccountName"] == "retrain-watcher"
    uid = real_cluster.kubectl("exec", pod["metadata"]["name"], "-n", NS, "--", "id", "-u").stdout.strip()
    assert uid == "65532"
    probe = real_cluster.kubectl(
        "exec",
        pod["metadata"]["name"],
        "-n",
        NS,
        "--",
        "python",
        "-c",
        "import urllib.request as u; print(u.urlopen('http://127.0.0.1:8080/readyz').status)",
    )
    assert probe.stdout.strip() == "200"


def test_a_gcs_upload_creates_one_ddp_job_that_trains_in_containers(loop, real_cluster):
    t = time.monotonic()
    data_uri = loop.land("v1")
    name = loop.wait_created("v1", 120)
    print(f"job {name} created {time.monotonic() - t:.1f}s after the marker")
    state = loop.wait_state("pytorchjob", name, ("Succeeded", "Failed"), 900)
    assert state == "Succeeded", loop.diagnose(name)
    print(f"{name} Succeeded {time.monotonic() - t:.0f}s after the marker")
    assert [j["metadata"]["name"] for j in loop.jobs_for("v1")] == [name], "exactly one job per data version"
    job_pods = pods(real_cluster, f"training.kubeflow.org/job-name={name}")
    assert sorted(p["metadata"]["name"] for p in job_pods) == [f"{name}-master-0", f"{name}-worker-0"]
    for p in job_pods:
        assert p["spec"]["nodeName"] == NODE_NAME
        assert p["status"]["phase"] == "Succeeded"
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        assert env["MASTER_ADDR"] == f"{name}-master-0"  # the operator's headless Service, via CoreDNS
        assert env["DATA_URI"].rstrip("/") == data_uri
    master_log = real_cluster.kubectl("logs", f"{name}-master-0", "-n", NS).stdout
    assert re.search(r"training gs://\S+: 2 processes \(\w+, gloo[,)]", master_log), master_log[-2000:]
    latest = loop.latest()
    assert latest is not None and latest["uri"].startswith(f"gs://{BUCKETS['models']}/{PREFIX}/")
    lineage = json.loads(
        loop.storage_client()
        .bucket(BUCKETS["models"])
        .blob(f"{PREFIX}/{latest['version']}/lineage.json")
        .download_as_bytes()
    )
    assert lineage["job_name"] == name
    time.sleep(5)  # a redelivered notification must not create a second job
    assert len(loop.jobs_for("v1")) == 1


def _model(loop: ContainersLoop, output_prefix: str, version: str) -> dict[str, Any]:
    blob = loop.storage_client().bucket(BUCKETS["models"]).blob(f"{output_prefix}/{version}/model.pt")
    state: dict[str, Any] = torch.load(io.BytesIO(blob.download_as_bytes()), weights_only=True)
    return state


def test_deleting_a_worker_pod_restarts_it_and_resumes_exactly(loop, real_cluster, tmp_path):
    """ExitCode policy: the deleted worker's SIGTERM makes both ranks checkpoint and exit 143 (retryable);
    the operator recreates the pods, which resume from the checkpoint. The final weights equal those of
    the same job run without interruption."""
    data_uri = f"gs://{BUCKETS['data']}/{PREFIX}/v1"
    if loop.storage_client().bucket(BUCKETS["data"]).get_blob(f"{PREFIX}/v1/manifest.json") is None:
        loop.land("v1")
    hp = {"epochs": 12, "batch-size": 8, "checkpoint-every": 20}
    manifests = {}
    for run in ("straight", "preempted"):
        doc = job_spec(loop.storage_host, 12, name=f"resume-{run}-{uuid.uuid4().hex[:4]}", checkpoint_every=20)
        doc["storage"] = {
            "data": data_uri,
            "output": f"gs://{BUCKETS['models']}/resume-{run}",
            "checkpoints": f"gs://{BUCKETS['checkpoints']}/resume-{run}-{uuid.uuid4().hex[:6]}",
        }
        doc["args"] = ["--model-version=v-test", "--stop-check-every=1"]
        manifests[run] = render(doc, tmp_path, hp)

    straight = manifests["straight"]["metadata"]["name"]
    real_cluster.apply(manifests["straight"])
    assert loop.wait_state("pytorchjob", straight, ("Succeeded", "Failed"), 900) == "Succeeded", loop.diagnose(straight)

    name = manifests["preempted"]["metadata"]["name"]
    ckpt = manifests["preempted"]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    ckpt_uri = next(e["value"] for e in ckpt["env"] if e["name"] == "CHECKPOINT_URI")
    bucket, _, prefix = ckpt_uri.removeprefix("gs://").partition("/")
    real_cluster.apply(manifests["preempted"])
    wait_for(
        lambda: any(b.name.endswith(".pt") for b in loop.storage_client().list_blobs(bucket, prefix=prefix)),
        600,
        "the first checkpoint",
    )
    real_cluster.kubectl("delete", "pod", f"{name}-worker-0", "-n", NS, "--wait=false")
    assert loop.wait_state("pytorchjob", name, ("Succeeded", "Failed"), 900) == "Succeeded", loop.diagnose(name)
    events = real_cluster.kubectl(
        "get",
        "events",
        "-n",
        NS,
        f"--field-selector=involvedObject.name={name}",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}",
    ).stdout
    assert "PyTorchJobRestarting" in events, events
    assert f"{name}-worker-0 exited with code 143" in events, events  # SIGTERM -> checkpoint -> 143
    master_log = real_cluster.kubectl("logs", f"{name}-master-0", "-n", NS).stdout
    assert "resum" in master_log.lower(), master_log[-3000:]

    a = _model(loop, "resume-straight", "v-test")
    b = _model(loop, "resume-preempted", "v-test")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after the resume"


def test_the_charts_cronjob_runs_once_and_creates_its_job(loop, real_cluster):
    cron = f"{WATCHER}-scheduled"
    job = f"manual-{uuid.uuid4().hex[:6]}"
    before = {j["metadata"]["name"] for j in real_cluster.get("pytorchjobs", namespace=NS)["items"]}
    real_cluster.kubectl("create", "job", job, f"--from=cronjob/{cron}", "-n", NS)
    wait_for(
        lambda: (real_cluster.get("job", job, NS).get("status", {}).get("succeeded") or 0) >= 1,
        300,
        f"Job {job} to complete",
    )
    after = {j["metadata"]["name"] for j in real_cluster.get("pytorchjobs", namespace=NS)["items"]}
    created = sorted(after - before)
    assert len(created) == 1 and created[0].startswith("retrain-"), created
    real_cluster.kubectl("delete", "pytorchjob", created[0], "-n", NS, "--wait=false")


def test_a_tfjob_trains_with_two_workers_over_tf_config(loop, real_cluster, tmp_path):
    name = f"tf-{uuid.uuid4().hex[:6]}"
    doc = {
        "kind": "TFJob",
        "name": name,
        "image": IMAGES["tf-trainer"],
        "command": ["python", "-m", "tf_trainer.train"],
        "replicas": {"Worker": {"replicas": 2}},
        "resources": {"cpu": "500m", "memory": "2Gi"},
        "restartPolicy": "OnFailure",
        "runPolicy": {"backoffLimit": 2, "cleanPodPolicy": "None"},
        "hyperparameters": {"epochs": {"type": "int", "default": 1, "min": 1}},
        "storage": {"data": f"gs://{BUCKETS['data']}/{PREFIX}/v1", "output": f"gs://{BUCKETS['models']}/tf-{name}"},
        "env": {
            "STORAGE_EMULATOR_HOST": loop.storage_host,
            "GOOGLE_CLOUD_PROJECT": "demo-project",
            "OMP_NUM_THREADS": "1",
        },
    }
    if loop.storage_client().bucket(BUCKETS["data"]).get_blob(f"{PREFIX}/v1/manifest.json") is None:
        loop.land("v1")
    manifest = render(doc, tmp_path)
    real_cluster.apply(manifest)
    state = loop.wait_state("tfjob", name, ("Succeeded", "Failed"), 900)
    assert state == "Succeeded", loop.diagnose(name)
    for i in range(2):
        p = real_cluster.get("pod", f"{name}-worker-{i}", NS)
        env = {e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]}
        tf_config = json.loads(env["TF_CONFIG"])
        assert tf_config["task"] == {"type": "worker", "index": i}
        assert len(tf_config["cluster"]["worker"]) == 2
        assert p["status"]["phase"] == "Succeeded" and p["spec"]["nodeName"] == NODE_NAME
