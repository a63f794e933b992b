"""End to end on CPU: real multi-process DDP (gloo) with the operator's env, fake-gcs-server for data,
checkpoints and the registry. Each run is 2 processes, a small MLP and a few dozen steps."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.trainer.conftest import require_torch

torch = require_torch()

from trainer import data, gcs  # noqa: E402
from trainer.gcs import GcsUri  # noqa: E402

from tests.trainer.conftest import (  # noqa: E402
    child_env,
    free_port,
    operator_pod_env,
    run_all,
    torchrun_cmd,
    trainer_cmd,
)

ARGS = ["--epochs=3", "--batch-size=32", "--lr=0.1", "--hidden=64", "--backend=gloo"]


@pytest.fixture
def dataset(bucket: str) -> str:
    arrays, classes = data.synthetic(seed=0, n=2048)
    uri = f"gs://{bucket}/data/synthetic"
    data.write_dataset(uri, arrays, classes, shards=4, val_shards=1, val_fraction=0.2)
    return uri


def storage(bucket: str, dataset: str, run: str) -> dict[str, str]:
    return {
        "DATA_URI": dataset,
        "OUTPUT_URI": f"gs://{bucket}/models/mlp",
        "CHECKPOINT_URI": f"gs://{bucket}/ckpt/{run}",
    }


def text(bucket: str, path: str) -> str:
    return gcs.blob(GcsUri(bucket, path)).download_as_text()


def weights(bucket: str, path: str) -> dict:
    raw = gcs.blob(GcsUri(bucket, path)).download_as_bytes()
    return torch.load(io.BytesIO(raw), weights_only=True)


def start_pods(gcs_env, extra_env, args, n=2, stderr_dir: Path | None = None, stdout=subprocess.PIPE):
    """n processes with exactly the env training-operator gives n one-process pods."""
    port = free_port()
    procs = []
    for rank in range(n):
        err = open(stderr_dir / f"rank{rank}.err", "a") if stderr_dir else subprocess.PIPE  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                trainer_cmd(*args),
                env=child_env(gcs_env, **extra_env, **operator_pod_env(rank, n, port)),
                stdout=stdout,
                stderr=err,
                text=True,
            )
        )
    return procs


def check_outputs(bucket: str, version: str, world: int, mode: str) -> dict:
    base = f"models/mlp/{version}"
    names = sorted(b.name for b in gcs.client().list_blobs(bucket, prefix=base + "/"))
    assert names == [
        f"{base}/{n}" for n in ("_COMPLETE", "curves.csv", "lineage.json", "metrics.json", "model.pt", "model.pt2")
    ]
    lineage = json.loads(text(bucket, f"{base}/lineage.json"))
    assert lineage["world_size"] == world and lineage["launch_mode"] == mode
    assert lineage["data"]["manifest_generation"] and len(lineage["data"]["shards"]) == 5
    assert lineage["hyperparameters"]["lr"] == 0.1 and lineage["started_at"] <= lineage["ended_at"]
    rows = [line.split(",") for line in text(bucket, f"{base}/curves.csv").splitlines()[1:]]
    losses = [float(r[2]) for r in rows]
    assert len(rows) == 3 and losses[-1] < losses[0], f"training loss did not decrease: {losses}"
    metrics = json.loads(text(bucket, f"{base}/metrics.json"))
    assert metrics["val_accuracy"] > 0.3  # 10 classes: chance is 0.1
    latest = json.loads(text(bucket, "models/mlp/LATEST"))
    assert latest["version"] == version and latest["value"] == metrics["val_accuracy"]
    sd = weights(bucket, f"{base}/model.pt")
    assert sd["net.1.weight"].shape == (64, 32)
    prog = torch.export.load(io.BytesIO(gcs.blob(GcsUri(bucket, f"{base}/model.pt2")).download_as_bytes()))
    assert prog.module()(torch.zeros(5, 32)).shape == (5, 10)  # dynamic batch dimension
    assert lineage["export"] == {"ok": True, "input": {"shape": [2, 32], "dtype": "float32", "dynamic_dims": [0]}}
    return metrics


def test_torchrun_two_processes(bucket, dataset, gcs_env):
    p = subprocess.Popen(
        torchrun_cmd(2, *ARGS, "--model-version=torchrun"),
        env=child_env(gcs_env, **storage(bucket, dataset, "torchrun")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    [(rc, _out, err)] = run_all([p])
    assert rc == 0, err[-3000:]
    check_outputs(bucket, "torchrun", 2, "torchrun")


def test_one_pod_with_nproc_per_node_2_relaunches_under_torchrun(bucket, dataset, gcs_env):
    # A PyTorchJob with one Master and nprocPerNode: "2": WORLD_SIZE=2, RANK=0, PET_NPROC_PER_NODE=2.
    env = child_env(gcs_env, **storage(bucket, dataset, "launch"), **operator_pod_env(0, 1, free_port(), nproc="2"))
    assert env["WORLD_SIZE"] == "2"
    p = subprocess.Popen(
        trainer_cmd(*ARGS, "--model-version=launch"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    [(rc, _out, err)] = run_all([p])
    assert rc == 0, err[-3000:]
    assert "running under torchrun" in err and "workers reported [0, 0]; exit 0" in err
    check_outputs(bucket, "launch", 2, "torchrun")


def test_two_pods_then_sigterm_and_restart_is_bitwise_identical(bucket, dataset, gcs_env, tmp_path):
    """Two processes with the env of two one-process pods train and publish (the reference run);
    the same run preempted at a random step and restarted ends with bitwise-equal weights."""
    args = [*ARGS, "--checkpoint-every=20", "--stop-check-every=1", "--log-every=1"]
    # The reference: never interrupted.
    results = run_all(start_pods(gcs_env, storage(bucket, dataset, "ref"), [*args, "--model-version=ref"]))
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    check_outputs(bucket, "ref", 2, "pod")
    (tmp_path / "ref.err").write_text(results[0][2])
    assert "epoch 2" in results[0][1] and results[1][1] == ""  # only rank 0 reports
    total = 3 * (1638 // 2 // 32)  # 75 steps

    # The same run, preempted: SIGTERM to the worker pod only, at a random step.
    stop_at = int(os.environ.get("STOP_AT", "0")) or random.SystemRandom().randint(3, total - 15)
    env = storage(bucket, dataset, "preempted")
    procs = start_pods(gcs_env, env, [*args, "--model-version=resumed"], stderr_dir=tmp_path)
    for line in procs[0].stdout:
        if line.startswith(f"step {stop_at} "):
            procs[1].send_signal(signal.SIGTERM)
            break
    rcs = [p.wait(timeout=120) for p in procs]
    errs = [(tmp_path / f"rank{r}.err").read_text() for r in range(2)]
    assert rcs == [143, 143], f"stop_at={stop_at}: {rcs}\n{errs[0][-2000:]}\n{errs[1][-2000:]}"
    assert "received signal 15" in errs[1] and "checkpoint" in errs[0]
    ck = storage(bucket, dataset, "preempted")["CHECKPOINT_URI"]
    from trainer import ckpt

    mgr = ckpt.CheckpointManager(ck, 0, 2)
    found = mgr.latest()
    assert found and stop_at <= found[0] < total, (stop_at, mgr.steps())
    step = found[0]
    assert found[1]["world_size"] == 2 and found[1]["args"]["lr"] == 0.1 and found[1]["data"]["manifest_generation"]
    # Garbage that must not be loaded: a "newer" checkpoint that one rank never finished.
    ckuri = GcsUri.parse(ck)
    newer = ckpt.step_dir(step + 5)
    for name in (".metadata", "meta.json", "rank-0.pt", "__0_0.distcp"):
        gcs.blob(ckuri.join(newer, name)).upload_from_string(b"junk" if name != "meta.json" else b'{"world_size": 2}')

    # The restart (same command, as the operator's restartPolicy would do).
    procs = start_pods(gcs_env, env, [*args, "--model-version=ignored-on-resume"], stderr_dir=tmp_path)
    rcs = [p.wait(timeout=120) for p in procs]
    errs = [(tmp_path / f"rank{r}.err").read_text() for r in range(2)]
    assert rcs == [0, 0], errs[0][-3000:]
    assert f"skipping checkpoint {ck}/{newer}: incomplete" in errs[0]
    assert f"resumed from checkpoint step {step}" in errs[0] and f"resumed from checkpoint step {step}" in errs[1]
    steps = [step]

    ref, res = weights(bucket, "models/mlp/ref/model.pt"), weights(bucket, "models/mlp/resumed/model.pt")
    assert ref.keys() == res.keys()
    for k in ref:
        assert torch.equal(ref[k], res[k]), f"{k} differs after resume at step {steps[0]} (stop_at={stop_at})"
    assert text(bucket, "models/mlp/ref/metrics.json") == text(bucket, "models/mlp/resumed/metrics.json")
    assert text(bucket, "models/mlp/ref/curves.csv") == text(bucket, "models/mlp/resumed/curves.csv")
    lineage = json.loads(text(bucket, "models/mlp/resumed/lineage.json"))
    assert lineage["resumed_from_steps"] == [steps[0]]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr=-1"], "argument --lr: must be > 0, got -1"),
        (["--lr=nan"], "argument --lr: must be finite"),
        (["--epochs=0"], "argument --epochs: must be >= 1, got 0"),
        (["--batch-size=abc"], "argument --batch-size: expected an integer, got 'abc'"),
        (["--momentum=1"], "argument --momentum: must be < 1"),
        (["--backend=mpi"], "argument --backend: invalid choice: 'mpi'"),
        (["--model=mymodel"], "argument --model: must be module:function"),
        (["--output-uri=s3://b/m"], "OUTPUT_URI must be a gs://bucket/path URI"),
        (["--output-uri=gs://models-only"], "must be gs://<models>/<model>"),
        (["--learning-rate=0.1"], "unrecognized arguments: --learning-rate=0.1"),
    ],
)
def test_bad_hyperparameters_fail_before_torch_is_imported(argv, message):
    code = (
        "import sys\nfrom trainer import train\ntry:\n    train.main(sys.argv[1:])\n"
        "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, env=child_env({}), check=False
    )
    assert p.stdout.strip() == "exit 2 False", (p.stdout, p.stderr)
    assert message in p.stderr and "Traceback" not in p.stderr
    assert time.monotonic() - t0 < 20


def test_bad_values_found_with_the_data_fail_before_training(bucket, dataset, gcs_env):
    env = child_env(gcs_env, **storage(bucket, dataset, "bad"))
    for argv, message in [
        (["--batch-size=100000"], "larger than one rank's share of the training split"),
        (["--model=no_such_module:fn"], "--model 'no_such_module:fn': cannot import 'no_such_module'"),
        (["--model=trainer.model:nothing"], "has no callable 'nothing'"),
    ]:
        p = subprocess.run(trainer_cmd(*argv), env=env, capture_output=True, text=True, timeout=120, check=False)
        assert p.returncode == 2, p.stderr[-2000:]
        assert message in p.stderr and "Traceback" not in p.stderr
        assert "step " not in p.stdout
    assert not list(gcs.client().list_blobs(bucket, prefix="ckpt/bad/"))


def test_missing_data_fails_with_the_uri(bucket, gcs_env):
    env = child_env(gcs_env, DATA_URI=f"gs://{bucket}/no/such/data", OUTPUT_URI=f"gs://{bucket}/models/mlp")
    p = subprocess.run(trainer_cmd(), env=env, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 2
    assert f"no data set at gs://{bucket}/no/such/data" in p.stderr and "Traceback" not in p.stderr
