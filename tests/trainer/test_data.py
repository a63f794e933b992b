"""Sharded data sets in fake-gcs-server: format, generations, per-rank reading, errors, retries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trainer import data, gcs
from trainer.gcs import GcsUri, TrainerError


def small(n: int = 1000, dim: int = 4) -> tuple[dict[str, np.ndarray], int]:
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(n, dim)).astype(np.float32), "y": rng.integers(0, 3, n).astype(np.int64)}, 3


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n_shards", [1, 4, 7, 8])
def test_shard_assignment_follows_distributed_sampler(world, n_shards):
    for epoch in range(3):
        parts = [data.shard_assignment(n_shards, world, r, seed=5, epoch=epoch) for r in range(world)]
        assert len({len(p) for p in parts}) == 1  # same count on every rank (padded)
        flat = [i for p in parts for i in p]
        assert set(flat) == set(range(n_shards))  # every shard read
        if n_shards % world == 0:
            assert len(flat) == len(set(flat)) == n_shards  # and disjoint when it divides
        else:
            assert len(flat) == -(-n_shards // world) * world  # padded by wrap-around, like DistributedSampler
    # A different epoch gives a different order (for more than a couple of shards).
    if n_shards >= 4:
        orders = {tuple(data.shard_assignment(n_shards, 1, 0, seed=5, epoch=e)) for e in range(5)}
        assert len(orders) > 1


def test_write_then_read_manifest_with_generations(bucket):
    arrays, k = small()
    uri = f"gs://{bucket}/ds/v1"
    m = data.write_dataset(uri, arrays, k, shards=4, val_shards=2, val_fraction=0.2)
    got = data.read_manifest(uri)
    assert got.generation == m.generation and got.generation
    assert [s.generation for s in got.splits["train"]] == [s.generation for s in m.splits["train"]]
    assert all(s.generation for split in got.splits.values() for s in split)
    assert sum(s.records for s in got.splits["train"]) == 800 and sum(s.records for s in got.splits["val"]) == 200
    assert got.features["x"] == {"dtype": "float32", "shape": [4]} and got.num_classes == 3
    names = sorted(b.name for b in gcs.client().list_blobs(bucket, prefix="ds/v1/"))
    assert names == ["ds/v1/manifest.json", *[f"ds/v1/train-{i:05d}-of-00004.npz" for i in range(4)],
                     *[f"ds/v1/val-{i:05d}-of-00002.npz" for i in range(2)]]
    lineage = got.lineage()
    assert lineage["uri"] == uri and lineage["manifest_generation"] == m.generation and len(lineage["shards"]) == 6


def test_ranks_read_disjoint_records_that_cover_the_split(bucket):
    arrays, k = small(1200)
    uri = f"gs://{bucket}/ds"
    data.write_dataset(uri, arrays, k, shards=8, val_shards=1, val_fraction=0.0 + 1 / 12)
    m = data.read_manifest(uri)
    for epoch in range(2):
        seen = []
        for rank in range(2):
            r = data.ShardReader(m, "train", rank, 2, batch_size=50, seed=3)
            ids = np.concatenate([b["id"] for b in r.epoch(epoch)])
            assert len(ids) == r.steps_per_epoch(epoch) * 50
            # Only this rank's shards were downloaded.
            assert r.bytes_read == sum(s.size for i, s in enumerate(m.splits["train"])
                                       if i in r.assignment(epoch))
            seen.append(set(ids.tolist()))
        assert not seen[0] & seen[1]
        train_ids = set(range(100, 1200))
        assert seen[0] | seen[1] <= train_ids and len(seen[0] | seen[1]) >= len(train_ids) - 2 * 50


def test_resume_mid_epoch_yields_the_same_remaining_batches(bucket):
    arrays, k = small(900)
    uri = f"gs://{bucket}/ds"
    data.write_dataset(uri, arrays, k, shards=5, val_shards=1, val_fraction=0.1)
    m = data.read_manifest(uri)
    r = data.ShardReader(m, "train", 1, 2, batch_size=32, seed=9)
    full = [b["id"] for b in r.epoch(1)]
    for start in (0, 1, 4, 5, len(full) - 1):
        rest = [b["id"] for b in data.ShardReader(m, "train", 1, 2, batch_size=32, seed=9).epoch(1, start)]
        assert len(rest) == len(full) - start
        assert all(np.array_equal(a, b) for a, b in zip(rest, full[start:], strict=True))
    # Skipping whole shards does not download them.
    late = data.ShardReader(m, "train", 1, 2, batch_size=32, seed=9)
    list(late.epoch(1, len(full) - 1))
    assert late.bytes_read < r.bytes_read


def test_missing_data_names_the_uri(bucket):
    with pytest.raises(TrainerError, match=f"no data set at gs://{bucket}/nothing/here"):
        data.read_manifest(f"gs://{bucket}/nothing/here")
    with pytest.raises(TrainerError, match="gs://bucket/path"):
        data.read_manifest("/local/path")


def test_bad_manifest_is_reported(bucket):
    gcs.blob(GcsUri(bucket, "bad/manifest.json")).upload_from_string(json.dumps({"format": "other"}))
    with pytest.raises(TrainerError, match="bad manifest.*format"):
        data.read_manifest(f"gs://{bucket}/bad")


def test_a_shard_replaced_after_the_manifest_is_not_read_silently(bucket):
    arrays, k = small(200)
    uri = f"gs://{bucket}/ds"
    data.write_dataset(uri, arrays, k, shards=2, val_shards=1, val_fraction=0.1)
    m = data.read_manifest(uri)
    # Overwrite one shard: the manifest's generation of it no longer exists (bucket without versioning).
    gcs.blob(GcsUri(bucket, "ds/train-00000-of-00002.npz")).upload_from_string(b"not the same data")
    r = data.ShardReader(m, "train", 0, 1, batch_size=10, seed=0, shuffle=False)
    with pytest.raises(TrainerError, match="train-00000-of-00002.npz.*generation"):
        list(r.epoch(0))


def test_retries_back_off_on_transient_errors_only():
    from google.api_core import exceptions as gexc

    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise gexc.ServiceUnavailable("try later")
        return "ok"

    assert gcs.with_retries(flaky, "op", base=0.1, sleep=sleeps.append) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and sleeps[0] <= 0.1 and sleeps[1] <= 0.2

    def missing():
        calls.append(1)
        raise gexc.NotFound("gone")

    calls.clear()
    with pytest.raises(gexc.NotFound):
        gcs.with_retries(missing, "op", sleep=sleeps.append)
    assert len(calls) == 1

    def always():
        raise ConnectionError("reset")

    sleeps.clear()
    with pytest.raises(ConnectionError):
        gcs.with_retries(always, "op", attempts=4, sleep=sleeps.append)
    assert len(sleeps) == 3


def test_data_cli_writes_a_dataset_from_a_source(bucket, capsys):
    assert data.main(["write", f"gs://{bucket}/cli", "--source", "synthetic", "--shards", "4", "--val-shards", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == {"train": 3277, "val": 819}
    assert data.main(["show", f"gs://{bucket}/cli"]) == 0
    assert data.main(["show", f"gs://{bucket}/none"]) == 2
    assert f"gs://{bucket}/none" in capsys.readouterr().err
