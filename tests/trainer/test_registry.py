"""The registry's layout and LATEST promotion (compare-and-swap on generations) in fake-gcs-server."""

from __future__ import annotations

import io
import json
import random
import re
import subprocess
import sys

import pytest
from trainer import gcs, registry
from trainer.gcs import GcsUri, TrainerError

from tests.trainer.conftest import child_env


def publish(reg: registry.Registry, version: str, acc: float) -> None:
    reg.publish(
        version,
        {"model.pt": b"weights-" + version.encode()},
        {"val_accuracy": acc},
        {"job_name": "j"},
        [{"step": 1, "epoch": 0, "train_loss": 1.0, "val_loss": 1.0, "val_accuracy": acc, "lr": 0.1}],
    )


def test_publish_layout(bucket):
    reg = registry.Registry(f"gs://{bucket}/mnist")
    publish(reg, "v1", 0.5)
    names = sorted(b.name for b in gcs.client().list_blobs(bucket))
    assert names == [
        "mnist/v1/_COMPLETE",
        "mnist/v1/curves.csv",
        "mnist/v1/lineage.json",
        "mnist/v1/metrics.json",
        "mnist/v1/model.pt",
    ]
    curves = gcs.client().bucket(bucket).blob("mnist/v1/curves.csv").download_as_text().splitlines()
    assert curves[0] == "step,epoch,train_loss,val_loss,val_accuracy,lr" and curves[1] == "1,0,1.0,1.0,0.5,0.1"
    with pytest.raises(TrainerError, match="bad model version"):
        reg.publish("LATEST", {}, {}, {}, [])
    with pytest.raises(TrainerError, match="gs://<models>/<model>"):
        registry.Registry(f"gs://{bucket}")


def test_latest_moves_only_when_the_metric_beats_it(bucket):
    reg = registry.Registry(f"gs://{bucket}/m")
    assert reg.latest() == (None, 0)
    assert reg.promote("v1", "val_accuracy", 0.80).promoted
    assert not reg.promote("v2", "val_accuracy", 0.70).promoted
    assert not reg.promote("v3", "val_accuracy", 0.80).promoted  # a tie does not move it
    assert reg.promote("v4", "val_accuracy", 0.90).promoted
    cur, gen = reg.latest()
    assert cur["version"] == "v4" and cur["value"] == 0.90 and cur["uri"] == f"gs://{bucket}/m/v4" and gen
    assert not reg.promote("v5", "val_accuracy", float("nan")).promoted
    loss = registry.Registry(f"gs://{bucket}/l")
    assert loss.promote("a", "val_loss", 0.5, "min").promoted
    assert loss.promote("b", "val_loss", 0.4, "min").promoted
    assert not loss.promote("c", "val_loss", 0.6, "min").promoted
    assert loss.latest()[0]["version"] == "b"


PROMOTER = """
import json, sys, time
from trainer import registry
uri, version, value, start = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
reg = registry.Registry(uri)
reg.latest()  # warm the client up before the common start time
while time.time() < start:
    time.sleep(0.001)
p = reg.promote(version, "val_accuracy", value)
print(json.dumps({"version": version, "promoted": p.promoted, "attempts": p.attempts}))
"""


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_promoters_never_lose_the_better_model(bucket, gcs_env, round_):
    """Six processes (as six finishing jobs would) promote at the same instant; the best wins."""
    import time

    uri = f"gs://{bucket}/race"
    rng = random.Random(round_)
    values = [round(rng.uniform(0.5, 0.99), 4) for _ in range(6)]
    if round_ == 0:
        registry.Registry(uri).promote("seed", "val_accuracy", 0.6)  # an existing LATEST to beat
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTER, uri, f"v{i}", str(v), str(start)],
            env=child_env(gcs_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, v in enumerate(values)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out))
    cur, _ = registry.Registry(uri).latest()
    best = max(values + ([0.6] if round_ == 0 else []))
    assert cur["value"] == best
    if best != 0.6:
        assert cur["version"] == f"v{values.index(best)}"
    # The races were real: someone had to retry after a lost compare-and-swap, or lost outright.
    assert any(r["attempts"] > 1 for r in results) or sum(r["promoted"] for r in results) < len(values)


def test_versions_are_unique_and_never_overwritten(bucket):
    reg = registry.Registry(f"gs://{bucket}/models/u")
    versions = {registry.new_version() for _ in range(200)}
    assert len(versions) == 200 and all(re.fullmatch(r"v\d{8}T\d{6}Z-[0-9a-f]{8}", v) for v in versions)
    reg.publish("trial", {"model.pt": b"first"}, {"val_accuracy": 0.5}, {}, [])
    with pytest.raises(TrainerError, match="model version trial exists already"):
        reg.publish("trial", {"model.pt": b"second"}, {"val_accuracy": 0.9}, {}, [])
    assert gcs.blob(GcsUri(bucket, "models/u/trial/model.pt")).download_as_bytes() == b"first"


def test_promotion_refuses_to_compare_different_metrics(bucket):
    reg = registry.Registry(f"gs://{bucket}/models/p")
    assert reg.promote("a", "val_accuracy", 0.8, "max").promoted
    with pytest.raises(TrainerError, match="values of different metrics are not comparable"):
        reg.promote("b", "val_loss", 0.1, "min")
    assert reg.latest()[0]["version"] == "a"


def test_image_digest_in_lineage():
    digest = "sha256:" + "ab" * 32
    assert registry.image_lineage({"TRAINER_IMAGE": f"reg/trainer@{digest}"})["image_digest"] == digest
    assert (
        registry.image_lineage({"TRAINER_IMAGE": "reg/trainer:1.0", "TRAINER_IMAGE_DIGEST": digest})["image_digest"]
        == digest
    )
    assert registry.image_lineage({"TRAINER_IMAGE": "reg/trainer:1.0"})["image_digest"] is None


def test_export_program_with_its_signature_or_a_recorded_failure():
    from tests.trainer.conftest import require_torch

    torch = require_torch()
    from trainer import model

    net = model.MLP(6, 3, hidden=8)
    files, info = registry.torch_files(net, torch.zeros(2, 6))
    assert info == {"ok": True, "input": {"shape": [2, 6], "dtype": "float32", "dynamic_dims": [0]}}
    prog = torch.export.load(io.BytesIO(files["model.pt2"]))
    assert prog.module()(torch.ones(7, 6)).shape == (7, 3)
    assert set(torch.load(io.BytesIO(files["model.pt"]), weights_only=True)) == set(net.state_dict())

    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.export cannot trace it
                return x
            return -x

    files, info = registry.torch_files(DataDependent(), torch.ones(2, 6))
    assert not info["ok"] and info["error"] and "model.pt2" not in files and "model.pt" in files
