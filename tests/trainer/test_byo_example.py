"""The bring-your-own example (examples/byo_resnet): torchvision ResNet-18 with bf16 autocast on
webdataset-style PNG tar shards it generates itself, run as a PyTorchJob pod with nprocPerNode=2
through `python -m trainer.launch`, publishing a torch.export program. Stated accuracy: >= 0.90 on
its validation split (chance: 0.25)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from tests.trainer.conftest import REPO, require_torch

torch = require_torch()

from trainer import data, gcs  # noqa: E402
from trainer.gcs import GcsUri  # noqa: E402

from tests.trainer.conftest import child_env, free_port, operator_pod_env  # noqa: E402

sys.path.insert(0, str(REPO / "examples/byo_resnet"))
import shapes  # noqa: E402

SCRIPT = str(REPO / "examples/byo_resnet/train.py")
STATED_ACCURACY = 0.90


def test_tar_shards_roundtrip_with_disjoint_ranks(bucket):
    m = shapes.write(f"gs://{bucket}/shapes", n=120, shards=4, val_shards=1)
    assert m.features["png"]["dtype"] == "bytes" and m.num_classes == 4
    got = data.read_manifest(f"gs://{bucket}/shapes")
    ids = []
    for rank in range(3):  # more ranks than... shards split: 4 shards, 3 ranks
        r = data.ShardReader(got, "train", rank, 3, batch_size=8, seed=1)
        for b in r.epoch(0):
            assert b["png"][0][:8] == b"\x89PNG\r\n\x1a\n" and b["cls"].dtype.name == "int64"
            ids += b["id"].tolist()
    assert len(ids) == len(set(ids))  # disjoint across ranks


def test_byo_resnet18_reaches_the_stated_accuracy(bucket, gcs_env):
    shapes.write(f"gs://{bucket}/shapes", n=1600, shards=8, val_shards=2)
    env = child_env(
        gcs_env,
        DATA_URI=f"gs://{bucket}/shapes",
        OUTPUT_URI=f"gs://{bucket}/models/resnet",
        CHECKPOINT_URI=f"gs://{bucket}/ck/resnet",
        JOB_NAME="byo-resnet",
        JOBGEN_HYPERPARAMETERS=json.dumps(
            {"lr": {"type": "float", "value": 0.05}, "epochs": {"type": "int", "value": 4}}
        ),
        **operator_pod_env(0, 1, free_port(), nproc="2"),
    )
    p = subprocess.run(
        [sys.executable, "-m", "trainer.launch", SCRIPT, "--model-version=byo", "--workers=1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert "running under torchrun" in p.stderr
    acc = float(next(ln for ln in p.stdout.splitlines() if ln.startswith("val_accuracy")).split()[1])
    print("BYO ResNet-18 val_accuracy", acc)
    assert acc >= STATED_ACCURACY, p.stdout[-2000:]
    lineage = json.loads(gcs.blob(GcsUri(bucket, "models/resnet/byo/lineage.json")).download_as_text())
    assert lineage["export"]["ok"] and lineage["hyperparameters"]["epochs"] == 4 and lineage["world_size"] == 2
    prog = torch.export.load(io.BytesIO(gcs.blob(GcsUri(bucket, "models/resnet/byo/model.pt2")).download_as_bytes()))
    assert prog.module()(torch.zeros(3, 3, 32, 32)).shape == (3, 4)
