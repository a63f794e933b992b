"""Exact resume through SIGTERM at a random step, on CPU/gloo with DCP checkpoints, in the process
layouts a PyTorchJob produces: one pod with nprocPerNode=2 (the trainer relaunches itself under
torchrun behind its supervisor), and three one-process pods. (Two pods, plus an incomplete newer
checkpoint that must be skipped: test_train.py.) Final weights must be bitwise equal to an
uninterrupted run's."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess

import pytest

from tests.trainer.conftest import require_torch

torch = require_torch()

from trainer import ckpt, data, gcs  # noqa: E402
from trainer.gcs import GcsUri  # noqa: E402

from tests.trainer.conftest import child_env, free_port, operator_pod_env, trainer_cmd  # noqa: E402

ARGS = [
    "--epochs=2",
    "--batch-size=16",
    "--lr=0.1",
    "--hidden=32",
    "--backend=gloo",
    "--log-every=1",
    "--stop-check-every=1",
    "--checkpoint-every=7",
    "--optimizer=adamw",
    "--grad-accum=2",
    "--clip-grad-norm=1.0",
    "--precision=bf16",
    "--workers=2",
]


@pytest.fixture
def dataset(bucket: str) -> str:
    arrays, classes = data.synthetic(seed=3, n=1536)
    uri = f"gs://{bucket}/data/s"
    data.write_dataset(uri, arrays, classes, shards=6, val_shards=1, val_fraction=0.1)
    return uri


def launch(layout: str, env: dict[str, str], args: list[str]) -> list[subprocess.Popen]:
    port = free_port()
    if layout == "nproc2":  # one pod, nprocPerNode: "2": PID 1 is the trainer's supervisor
        envs = [child_env(env, **operator_pod_env(0, 1, port, nproc="2"))]
    else:
        envs = [child_env(env, **operator_pod_env(r, 3, port)) for r in range(3)]
    return [
        subprocess.Popen(trainer_cmd(*args), env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for e in envs
    ]


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    out = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=300)
            out.append((p.returncode, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return out


def weights(bucket: str, version: str) -> dict:
    raw = gcs.blob(GcsUri(bucket, f"models/m/{version}/model.pt")).download_as_bytes()
    return torch.load(io.BytesIO(raw), weights_only=True)


@pytest.mark.parametrize("layout", ["nproc2", "three-pods"])
def test_sigterm_at_a_random_step_then_restart_is_bitwise_identical(layout, bucket, dataset, gcs_env):
    def env(run: str) -> dict[str, str]:
        return {
            **gcs_env,
            "DATA_URI": dataset,
            "OUTPUT_URI": f"gs://{bucket}/models/m",
            "CHECKPOINT_URI": f"gs://{bucket}/ck/{run}",
        }

    for rc, err in finish(launch(layout, env("ref"), [*ARGS, "--model-version=ref"])):
        assert rc == 0, err[-3000:]
    world = 2 if layout == "nproc2" else 3
    per_rank = 1382 // 6 * (6 // world) if world == 3 else 1382 // 6 * 3
    total = 2 * (per_rank // 16 // 2)  # optimizer steps (2 micro-batches each) of two epochs, roughly
    stop_at = int(os.environ.get("STOP_AT", "0")) or random.SystemRandom().randint(2, max(3, total - 6))

    procs = launch(layout, env("cut"), [*ARGS, "--model-version=cut"])
    victim = procs[0] if layout == "nproc2" else procs[random.SystemRandom().randrange(3)]
    assert procs[0].stdout is not None
    for line in procs[0].stdout:
        if line.startswith(f"step {stop_at} "):
            victim.send_signal(signal.SIGTERM)
            break
    results = finish(procs)
    assert [rc for rc, _ in results] == [143] * len(procs), (stop_at, [e[-2500:] for _, e in results])
    if layout == "nproc2":
        assert "forwarding it to the 2 training processes" in results[0][1]
        assert "workers reported [143, 143]; exit 143" in results[0][1]
    found = ckpt.CheckpointManager(env("cut")["CHECKPOINT_URI"], 0, world).latest()
    # the SIGTERM save of a step whose periodic ("every") checkpoint is already complete keeps that one
    assert found and found[0] >= stop_at and found[1]["reason"] in ("SIGTERM", "every")

    results = finish(launch(layout, env("cut"), [*ARGS, "--model-version=cut"]))
    for rc, err in results:
        assert rc == 0, err[-3000:]
    assert f"resumed from checkpoint step {found[0]}" in results[0][1]

    ref, res = weights(bucket, "ref"), weights(bucket, "cut")
    assert ref.keys() == res.keys()
    for k in ref:
        assert torch.equal(ref[k], res[k]), f"{k} differs after resume at step {found[0]} (stop_at={stop_at})"
    lineage = json.loads(gcs.blob(GcsUri(bucket, "models/m/cut/lineage.json")).download_as_text())
    assert lineage["resumed_from_steps"] == [found[0]] and lineage["world_size"] == world
    assert lineage["precision"] == "bf16" and lineage["hyperparameters"]["grad_accum"] == 2


def test_elastic_resize_two_to_three_ranks_resumes_mid_epoch(bucket, dataset, gcs_env):
    """Preempted with 2 pods, restarted with 3 (an elastic scale-up): the rest of the epoch is
    re-dealt (trainer.data.epoch_plan; no record repeated or skipped: test_data.py), the LR schedule
    follows samples seen, and the sample count goes on from the checkpoint's."""
    env = {
        **gcs_env,
        "DATA_URI": dataset,
        "OUTPUT_URI": f"gs://{bucket}/models/m",
        "CHECKPOINT_URI": f"gs://{bucket}/ck/elastic",
    }
    args = [a for a in ARGS if not a.startswith(("--precision", "--workers"))] + ["--model-version=el"]
    port = free_port()
    procs = [
        subprocess.Popen(
            trainer_cmd(*args),
            env=child_env(env, **operator_pod_env(r, 2, port)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    assert procs[0].stdout is not None
    for line in procs[0].stdout:
        if line.startswith("step 5 "):
            procs[1].send_signal(signal.SIGTERM)
            break
    assert [rc for rc, _ in finish(procs)] == [143, 143]
    found = ckpt.CheckpointManager(env["CHECKPOINT_URI"], 0, 2).latest()
    assert found is not None
    step, meta = found
    results = finish(launch("three-pods", env, args))
    for rc, err in results:
        assert rc == 0, err[-3000:]
    assert "world size changed 2 -> 3" in results[0][1]
    metrics = json.loads(gcs.blob(GcsUri(bucket, "models/m/el/metrics.json")).download_as_text())
    curves = gcs.blob(GcsUri(bucket, "models/m/el/curves.csv")).download_as_text().splitlines()
    assert metrics["samples"] == meta["samples"] + (metrics["steps"] - step) * 16 * 2 * 3
    assert len(curves) == 3  # header + two epochs
