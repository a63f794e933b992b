"""Sharded data sets in fake-gcs-server: format, generations, per-rank reading, errors, retries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from trainer import data, gcs
from trainer.gcs import GcsUri, TrainerError

from tests.trainer.conftest import free_port


def small(n: int = 1000, dim: int = 4) -> tuple[dict[str, np.ndarray], int]:
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(n, dim)).astype(np.float32), "y": rng.integers(0, 3, n).astype(np.int64)}, 3


@pytest.mark.parametrize("world", [1, 2, 3, 4, 9])
@pytest.mark.parametrize("n_shards", [1, 4, 7, 8])
def test_epoch_plan_deals_disjoint_parts_that_cover_the_split(world, n_shards):
    shards = [data.Shard(f"s{i}", 100 + 7 * i) for i in range(n_shards)]
    for epoch in range(3):
        plan = data.epoch_plan(shards, [(0, world)], 10, seed=5, epoch=epoch)
        assert len(plan) == world and all(plan)  # every rank gets something, even with fewer shards than ranks
        covered = sorted((s.shard, r) for lst in plan for s in lst for r in range(s.start, s.end))
        assert covered == sorted((i, r) for i, sh in enumerate(shards) for r in range(sh.records))  # exactly once
    if n_shards >= 4:  # another epoch, another order
        orders = {tuple(data.shard_assignment(n_shards, 1, 0, seed=5, epoch=e)) for e in range(5)}
        assert len(orders) > 1


@pytest.mark.parametrize("history", [[(0, 2), (5, 3)], [(0, 3), (4, 2)], [(0, 2), (3, 4), (6, 3)], [(0, 4), (2, 1)]])
def test_elastic_resize_neither_repeats_nor_skips_records(history):
    """After a resize at step k, what each old rank had not read is re-dealt: the records read in
    the epoch (before and after) are disjoint, and only the drop-last tail stays unread."""
    shards = [data.Shard(f"s{i}", 90 + 11 * i) for i in range(6)]
    batch = 8
    read: list[tuple[int, int]] = []
    for i, (start, _world) in enumerate(history):
        end = history[i + 1][0] if i + 1 < len(history) else None
        plan = data.epoch_plan(shards, history[: i + 1], batch, seed=2, epoch=1)
        if end is None:
            end = start + min(sum(s.records for s in lst) for lst in plan) // batch
        for lst in plan:
            recs = [(s.shard, r) for s in lst for r in range(s.start, s.end)]
            read += recs[: (end - start) * batch]
    assert len(read) == len(set(read))
    total = sum(s.records for s in shards)
    assert total - len(read) < history[-1][1] * batch + sum(w for _, w in history) * batch


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
    assert names == [
        "ds/v1/manifest.json",
        *[f"ds/v1/train-{i:05d}-of-00004.npz" for i in range(4)],
        *[f"ds/v1/val-{i:05d}-of-00002.npz" for i in range(2)],
    ]
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
            assert r.bytes_read == sum(s.size for i, s in enumerate(m.splits["train"]) if i in r.assignment(epoch))
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
    with pytest.raises(TrainerError, match=r"bad manifest.*format"):
        data.read_manifest(f"gs://{bucket}/bad")


def test_a_shard_replaced_after_the_manifest_is_not_read_silently(bucket):
    arrays, k = small(200)
    uri = f"gs://{bucket}/ds"
    data.write_dataset(uri, arrays, k, shards=2, val_shards=1, val_fraction=0.1)
    m = data.read_manifest(uri)
    # Overwrite one shard: the manifest's generation of it no longer exists (bucket without versioning).
    gcs.blob(GcsUri(bucket, "ds/train-00000-of-00002.npz")).upload_from_string(b"not the same data")
    r = data.ShardReader(m, "train", 0, 1, batch_size=10, seed=0, shuffle=False)
    with pytest.raises(TrainerError, match=r"train-00000-of-00002\.npz.*generation"):
        list(r.epoch(0))


def test_one_retry_policy_retries_transient_errors_only_until_its_deadline(caplog):
    from google.api_core import exceptions as gexc
    from trainer import exitcodes

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise gexc.ServiceUnavailable("try later")
        return "ok"

    with caplog.at_level("WARNING", logger="trainer"):
        assert gcs.with_retries(flaky, "op", initial=0.01) == "ok"
    assert len(calls) == 3 and caplog.text.count("op failed (ServiceUnavailable") == 2

    def missing() -> None:
        calls.append(1)
        raise gexc.NotFound("gone")

    calls.clear()
    with pytest.raises(gexc.NotFound):
        gcs.with_retries(missing, "op", initial=0.01)
    assert len(calls) == 1  # permanent: not retried

    def down() -> None:
        calls.append(1)
        raise ConnectionError("reset")

    calls.clear()
    with pytest.raises(gexc.RetryError) as info:
        gcs.with_retries(down, "op", deadline=0.5, initial=0.01)
    assert len(calls) > 2 and exitcodes.classify(info.value) == exitcodes.TRANSIENT


def test_the_storage_clients_own_retry_is_off_under_the_policy(monkeypatch, caplog):
    """A storage call against an endpoint nobody listens on: with the client's own retry (120 s)
    still on, its first attempt would end in the client's RetryError, which the policy does not
    retry; here the policy itself retries it, several times within its 3-second budget."""
    from google.api_core import exceptions as gexc

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv(gcs.RETRY_SECONDS_ENV, "3")
    with caplog.at_level("WARNING", logger="trainer"), pytest.raises(gexc.RetryError):
        gcs.call(gcs.blob(GcsUri("b", "x")).download_as_bytes, what="read gs://b/x")
    assert caplog.text.count("read gs://b/x failed") >= 2


@pytest.mark.parametrize("raw", ["soon", "0", "-1", "7200"])
def test_a_bad_retry_budget_is_one_clear_error(monkeypatch, raw):
    monkeypatch.setenv(gcs.RETRY_SECONDS_ENV, raw)
    with pytest.raises(TrainerError, match=r"STORAGE_RETRY_SECONDS must be a number of seconds in \(0, 3600\]"):
        gcs.retry_seconds()


def test_data_cli_writes_a_dataset_from_a_source(bucket, capsys):
    assert (
        data.main(["write", f"gs://{bucket}/cli", "--source", "synthetic", "--shards", "4", "--val-shards", "1"]) == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == {"train": 3277, "val": 819}
    assert data.main(["show", f"gs://{bucket}/cli"]) == 0
    assert data.main(["show", f"gs://{bucket}/none"]) == 2
    assert f"gs://{bucket}/none" in capsys.readouterr().err
