"""The TF trainer: TF_CONFIG handling (no TensorFlow needed) and, when tensorflow-cpu is installed,
real 2-worker MultiWorkerMirroredStrategy runs on CPU against fake-gcs-server."""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys

import pytest
from tf_trainer import tfconfig
from trainer import data, gcs
from trainer.gcs import GcsUri, TrainerError

from tests.trainer.conftest import child_env, free_port, run_all

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
needs_tf = pytest.mark.skipif(not HAVE_TF, reason="tensorflow-cpu not installed (pip install tensorflow-cpu==2.21.0)")


def tf_config(cluster: dict, role: str, index: int) -> str:
    return json.dumps({"cluster": cluster, "task": {"type": role, "index": index}, "environment": "cloud"})


CLUSTER = {"chief": ["job-chief-0:2222"], "worker": ["job-worker-0:2222", "job-worker-1:2222"]}


def test_chief_is_rank_zero_and_workers_follow():
    assert (
        tfconfig.parse(tf_config(CLUSTER, "chief", 0)).rank,
        tfconfig.parse(tf_config(CLUSTER, "chief", 0)).world_size,
    ) == (0, 3)
    for i in range(2):
        t = tfconfig.parse(tf_config(CLUSTER, "worker", i))
        assert (t.rank, t.world_size, t.is_chief, t.type, t.index) == (i + 1, 3, False, "worker", i)


def test_without_a_chief_worker_zero_is_chief():
    cluster = {"worker": ["a:1", "b:1"]}
    assert [tfconfig.parse(tf_config(cluster, "worker", i)).rank for i in range(2)] == [0, 1]
    assert tfconfig.parse(tf_config(cluster, "worker", 0)).is_chief


def test_no_tf_config_is_a_single_worker():
    t = tfconfig.from_env({})
    assert (t.rank, t.world_size, t.is_chief) == (0, 1, True)


@pytest.mark.parametrize(
    "raw, message",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"task": {"type": "worker", "index": 0}}), "no cluster"),
        (json.dumps({"cluster": CLUSTER}), "no task type"),
        (tf_config({**CLUSTER, "ps": ["p:1"]}, "worker", 0), "ps replicas"),
        (tf_config(CLUSTER, "worker", 2), "out of range for 2 worker"),
        (tf_config(CLUSTER, "evaluator", 0), "no evaluator role"),
        (tf_config({"chief": ["c"]}, "chief", 0), "host:port"),
        (json.dumps({"cluster": CLUSTER, "task": {"type": "worker", "index": "x"}}), "task.index must be an integer"),
    ],
)
def test_bad_tf_config_is_rejected_clearly(raw, message):
    with pytest.raises(TrainerError, match=message):
        tfconfig.parse(raw)


def test_tf_trainer_cli_rejects_bad_hyperparameters_without_importing_tensorflow():
    code = (
        "import sys\nfrom tf_trainer import train\ntry:\n    train.main(sys.argv[1:])\n"
        "except SystemExit as e:\n    print('exit', e.code, 'tensorflow' in sys.modules)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code, "--epochs=-3"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env({}),
        check=False,
    )
    assert p.stdout.strip() == "exit 2 False" and "argument --epochs: must be >= 1" in p.stderr


def test_tf_trainer_shares_the_registry_without_torch():
    code = "import sys, tf_trainer.train, trainer.registry, trainer.data; print('torch' in sys.modules)"
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=child_env({}), check=False
    )
    assert p.stdout.strip() == "False", p.stderr


def start_workers(gcs_env, env, args, n=2):
    ports = [free_port() for _ in range(n)]
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"], "worker": [f"127.0.0.1:{p}" for p in ports[1:]]}
    roles = [("chief", 0)] + [("worker", i) for i in range(n - 1)]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tf_trainer.train", *args],
            env=child_env(
                gcs_env, **env, TF_CONFIG=tf_config(cluster, r, i), TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, i in roles
    ]


@needs_tf
def test_two_workers_mwms_train_publish_and_resume_after_sigterm(bucket, gcs_env):
    arrays, classes = data.synthetic(seed=0, n=2048)
    uri = f"gs://{bucket}/data"
    data.write_dataset(uri, arrays, classes, shards=4, val_shards=1)
    env = {
        "DATA_URI": uri,
        "OUTPUT_URI": f"gs://{bucket}/models/tf",
        "CHECKPOINT_URI": f"gs://{bucket}/ckpt/tf",
        "JOB_NAME": "tf-job",
        "HOSTNAME": "tf-job-chief-0",
    }
    args = ["--epochs=3", "--batch-size=32", "--lr=0.003", "--hidden=64", "--model-version=tf1", "--stop-check-every=1"]

    # Preempted in the second epoch: SIGTERM to the worker only; both checkpoint and stop.
    procs = start_workers(gcs_env, env, args)
    for line in procs[0].stdout:
        if line.startswith("epoch 0 "):
            procs[1].send_signal(signal.SIGTERM)
            break
    results = run_all(procs)
    assert [r[0] for r in results] == [143, 143], results[0][2][-3000:]

    results = run_all(start_workers(gcs_env, env, args))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    assert "resumed from checkpoint step" in results[0][2]
    base = "models/tf/tf1"
    names = sorted(b.name for b in gcs.client().list_blobs(bucket, prefix=base + "/"))
    assert names == [f"{base}/{n}" for n in ("_COMPLETE", "curves.csv", "lineage.json", "metrics.json", "model.keras")]
    lineage = json.loads(gcs.blob(GcsUri(bucket, f"{base}/lineage.json")).download_as_text())
    assert lineage["world_size"] == 2 and lineage["launch_mode"] == "tf_config"
    assert lineage["job_name"] == "tf-job"  # from JOB_NAME, never the pod name tf-job-chief-0
    rows = gcs.blob(GcsUri(bucket, f"{base}/curves.csv")).download_as_text().splitlines()[1:]
    assert [int(r.split(",")[1]) for r in rows] == [0, 1, 2]
    assert float(rows[-1].split(",")[2]) < float(rows[0].split(",")[2])
    latest = json.loads(gcs.blob(GcsUri(bucket, "models/tf/LATEST")).download_as_text())
    assert latest["version"] == "tf1" and latest["value"] > 0.3
