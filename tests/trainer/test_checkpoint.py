"""Atomic checkpoints in fake-gcs-server: parts + compose, verification, skip-on-corrupt."""

from __future__ import annotations

import logging

import pytest

from tests.trainer.conftest import require_torch

torch = require_torch()

from trainer import checkpoint, gcs  # noqa: E402
from trainer.gcs import GcsUri  # noqa: E402


def state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {"step": step, "model": {"w": torch.randn(64, 64, generator=g)}, "rng": [torch.get_rng_state()]}


def names(bucket: str, prefix: str) -> list[str]:
    return sorted(b.name for b in gcs.client().list_blobs(bucket, prefix=prefix))


def test_seal_detects_truncation_and_corruption():
    sealed = checkpoint.seal(b"payload" * 100)
    assert checkpoint.unseal(sealed) == b"payload" * 100
    with pytest.raises(checkpoint.CorruptCheckpoint, match="trailer"):
        checkpoint.unseal(sealed[:-5])
    with pytest.raises(checkpoint.CorruptCheckpoint, match="trailer"):
        checkpoint.unseal(sealed[: len(sealed) // 2])
    flipped = bytearray(sealed)
    flipped[10] ^= 1
    with pytest.raises(checkpoint.CorruptCheckpoint, match="SHA-256"):
        checkpoint.unseal(bytes(flipped))


@pytest.mark.parametrize("part_size", [checkpoint.PART_SIZE, 4096])
def test_write_composes_parts_and_leaves_no_temporaries(bucket, monkeypatch, part_size):
    monkeypatch.setattr(checkpoint, "PART_SIZE", part_size)
    store = checkpoint.CheckpointStore(f"gs://{bucket}/ck/run1")
    data = checkpoint.serialize(state(200))
    saved = store.write(200, data)
    assert saved.uri == f"gs://{bucket}/ck/run1/ckpt-000000000200.pt" and saved.generation
    assert names(bucket, "ck/") == ["ck/run1/ckpt-000000000200.pt"]
    assert store.read(200) == data  # byte-exact through compose (16 parts at 4 KiB)
    step, st = store.latest()
    assert step == 200 and torch.equal(st["model"]["w"], state(200)["model"]["w"])


def test_existing_checkpoint_is_never_overwritten(bucket):
    store = checkpoint.CheckpointStore(f"gs://{bucket}/ck")
    first = store.write(10, checkpoint.serialize(state(10)))
    again = store.write(10, checkpoint.serialize({**state(10), "extra": 1}))
    assert again.generation == first.generation
    assert "extra" not in store.latest()[1]


def test_latest_skips_partial_and_corrupt_checkpoints(bucket, caplog):
    store = checkpoint.CheckpointStore(f"gs://{bucket}/ck")
    store.write(100, checkpoint.serialize(state(100)))
    good = checkpoint.serialize(state(300))
    # A truncated object under a newer name (what a non-atomic writer killed mid-upload leaves),
    # a corrupt one, one of another format, and leftover temporary parts.
    gcs.blob(GcsUri(bucket, "ck/ckpt-000000000400.pt")).upload_from_string(good[: len(good) // 3])
    bad = bytearray(good)
    bad[100] ^= 0xFF
    gcs.blob(GcsUri(bucket, "ck/ckpt-000000000500.pt")).upload_from_string(bytes(bad))
    gcs.blob(GcsUri(bucket, "ck/ckpt-000000000600.pt")).upload_from_string(checkpoint.seal(b"not a torch file"))
    gcs.blob(GcsUri(bucket, "ck/_tmp/ckpt-000000000700.pt.abc.00")).upload_from_string(good[:1000])
    with caplog.at_level(logging.WARNING, logger="trainer"):
        step, st = store.latest()
    assert step == 100 and st["step"] == 100
    text = caplog.text
    assert "ckpt-000000000400.pt: no checkpoint trailer" in text
    assert "ckpt-000000000500.pt: SHA-256 mismatch" in text
    assert "ckpt-000000000600.pt: cannot load it" in text
    assert "700" not in text  # temporaries are never candidates


def test_prune_keeps_the_newest(bucket):
    store = checkpoint.CheckpointStore(f"gs://{bucket}/ck", keep=2)
    for s in (1, 2, 3, 4):
        store.write(s, checkpoint.serialize(state(s)))
    store.prune()
    assert store.steps() == [4, 3]


def test_no_checkpoints(bucket):
    assert checkpoint.CheckpointStore(f"gs://{bucket}/none").latest() is None
