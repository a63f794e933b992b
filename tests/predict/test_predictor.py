"""trainer.predict against fake-gcs-server, index by index in this process: shares, pinning, retries,
quarantine, completion. (The same module runs as a real Indexed Job in test_e2e.py.)"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest

from .conftest import CLASSES, publish, read_jsonl, require_torch, write_inputs

torch = require_torch()

from trainer import predict  # noqa: E402 - after the torch check
from trainer.gcs import GcsUri  # noqa: E402


def config(
    buckets: dict[str, str], index: int, completions: int = 3, version: str = "LATEST", **kw: Any
) -> predict.Config:
    return predict.Config(
        input=GcsUri(buckets["inputs"], "batch"),
        glob="*.np[yz]",
        model=f"gs://{buckets['models']}/mnist",
        model_version=version,
        output=GcsUri(buckets["preds"], "job-1"),
        index=index,
        completions=completions,
        batch_size=kw.pop("batch_size", 4),
        prefetch=kw.pop("prefetch", 3),
        writers=2,
        job_name="job-1",
        **kw,
    )


def expected(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def test_three_indexes_predict_every_input_once_and_complete(storage, buckets):
    v1 = publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    inputs = write_inputs(storage, buckets["inputs"], "batch", 10, rows=5)
    stats = [predict.run_index(config(buckets, i)) for i in range(3)]
    assert [s.inputs for s in stats] == [4, 3, 3]  # disjoint shares that cover all 10
    assert [s.completed for s in stats] == [False, False, True]  # only the last sees every output
    assert sum(s.predicted for s in stats) == 10 and all(s.existed == 0 for s in stats)
    assert stats[0].plan_created and not stats[1].plan_created
    preds = storage.bucket(buckets["preds"])
    for name, x in inputs.items():
        lines = read_jsonl(storage, buckets["preds"], f"job-1/predictions/{name}.jsonl")
        probs = np.array([line["probabilities"] for line in lines])
        np.testing.assert_allclose(probs, expected(v1.model, x), atol=2e-6)  # what model(x) says
        assert [line["class"] for line in lines] == expected(v1.model, x).argmax(1).tolist()
        assert [line["id"] for line in lines] == [f"{name}:{r}" for r in range(5)]
        assert {line["model_version"] for line in lines} == {"v1"}
        raw = np.load(io.BytesIO(preds.blob(f"job-1/raw/{name}.npz").download_as_bytes()))
        assert raw["probabilities"].shape == (5, CLASSES) and raw["logits"].shape == (5, CLASSES)
    manifest = json.loads(preds.blob("job-1/manifest.json").download_as_bytes())
    assert manifest["counts"] == {"inputs": 10, "predicted": 10, "quarantined": 0, "examples": 50}
    assert manifest["model"]["version"] == "v1" and manifest["model"]["file"] == "model.pt2"
    assert manifest["model"]["lineage"]["job_name"] == "train-v1"
    gens = {b.name.rsplit("/", 1)[1]: b.generation for b in storage.list_blobs(buckets["inputs"], prefix="batch/")}
    assert {e["name"]: e["generation"] for e in manifest["inputs"]} == gens
    assert preds.blob("job-1/_SUCCESS").exists()


def test_a_retried_index_skips_finished_work_and_never_overwrites(storage, buckets, monkeypatch):
    publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    write_inputs(storage, buckets["inputs"], "batch", 9, rows=3)
    real = predict.create_once
    calls = {"n": 0}

    def crash_after_two_outputs(uri, *args, **kwargs):  # the pod dies mid-share
        if "/predictions/" in uri.path:
            calls["n"] += 1
            if calls["n"] > 2:
                raise KeyboardInterrupt("killed")
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(predict, "create_once", crash_after_two_outputs)
    with pytest.raises(KeyboardInterrupt):
        predict.run_index(config(buckets, 1))
    monkeypatch.setattr(predict, "create_once", real)
    before = {b.name: b.generation for b in storage.list_blobs(buckets["preds"], prefix="job-1/predictions/")}
    assert len(before) == 2
    retried = predict.run_index(config(buckets, 1))
    assert retried.skipped == 2 and retried.predicted == 1  # only the unfinished input of its share of 3
    after = {b.name: b.generation for b in storage.list_blobs(buckets["preds"], prefix="job-1/predictions/")}
    assert {n: after[n] for n in before} == before  # generations unchanged: nothing written twice
    for i in (0, 2):
        predict.run_index(config(buckets, i))
    assert storage.bucket(buckets["preds"]).blob("job-1/_SUCCESS").exists()
    # A third attempt of a finished index writes nothing at all.
    everything = {b.name: b.generation for b in storage.list_blobs(buckets["preds"])}
    again = predict.run_index(config(buckets, 1))
    assert again.skipped == 3 and again.predicted == 0 and again.completed
    assert {b.name: b.generation for b in storage.list_blobs(buckets["preds"])} == everything


def test_latest_moving_mid_job_does_not_change_the_version(storage, buckets):
    models = f"gs://{buckets['models']}/mnist"
    v1 = publish(models, "v1", seed=1, value=0.5)
    inputs = write_inputs(storage, buckets["inputs"], "batch", 6, rows=4)
    first = predict.run_index(config(buckets, 0))
    assert first.model_version == "v1"
    publish(models, "v2", seed=2, value=0.9)  # LATEST -> v2 while the job runs
    from trainer.registry import Registry

    assert Registry(models).latest()[0]["version"] == "v2"
    rest = [predict.run_index(config(buckets, i)) for i in (1, 2)]
    assert {s.model_version for s in rest} == {"v1"}
    for name, x in inputs.items():
        lines = read_jsonl(storage, buckets["preds"], f"job-1/predictions/{name}.jsonl")
        assert {line["model_version"] for line in lines} == {"v1"}
        np.testing.assert_allclose([line["probabilities"] for line in lines], expected(v1.model, x), atol=2e-6)
    manifest = json.loads(storage.bucket(buckets["preds"]).blob("job-1/manifest.json").download_as_bytes())
    assert manifest["model"]["version"] == "v1" and manifest["model"]["resolved_from"] == "LATEST"


def test_corrupt_inputs_are_quarantined_and_the_job_completes(storage, buckets):
    publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    write_inputs(storage, buckets["inputs"], "batch", 4, rows=3)
    bucket = storage.bucket(buckets["inputs"])
    bucket.blob("batch/garbage.npy").upload_from_string(b"this is not numpy")
    buf = io.BytesIO()
    np.save(buf, np.zeros((3, 7), np.float32))  # the model takes 16 features
    bucket.blob("batch/wrong-shape.npy").upload_from_string(buf.getvalue())
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(2), b=np.zeros(2))
    bucket.blob("batch/no-x.npz").upload_from_string(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.full((2, 16), np.nan, np.float32))
    bucket.blob("batch/nan.npy").upload_from_string(buf.getvalue())
    bucket.blob("batch/_SUCCESS").upload_from_string(b"")  # a marker is never an input
    stats = [predict.run_index(config(buckets, i, batch_size=64)) for i in range(3)]
    assert sum(s.quarantined for s in stats) == 4 and sum(s.predicted for s in stats) == 4
    manifest = json.loads(storage.bucket(buckets["preds"]).blob("job-1/manifest.json").download_as_bytes())
    assert manifest["counts"] == {"inputs": 8, "predicted": 4, "quarantined": 4, "examples": 12}
    reasons = {q["name"]: q["reason"] for q in manifest["quarantined"]}
    assert "not a .npy/.npz" in reasons["garbage.npy"]
    assert "the model rejected the input" in reasons["wrong-shape.npy"]
    assert "without an array named x" in reasons["no-x.npz"]
    assert "NaN" in reasons["nan.npy"]
    entry = json.loads(storage.bucket(buckets["preds"]).blob("job-1/quarantine/garbage.npy.json").download_as_bytes())
    assert entry["generation"] == bucket.get_blob("batch/garbage.npy").generation


def test_state_dict_and_static_export_give_the_same_predictions(storage, buckets):
    models = f"gs://{buckets['models']}/mnist"
    v1 = publish(models, "v1", seed=3, value=0.5, pt2=False)  # model.pt only: into the trainer's MLP
    write_inputs(storage, buckets["inputs"], "batch", 3, rows=11, ext="npz")
    publish(models, "v2", seed=3, value=0.6, pt=False, dynamic=False)  # a program exported for batch 8
    outs = {}
    for version, job in (("v1", "job-pt"), ("v2", "job-pt2")):
        for i in range(2):
            cfg = config(buckets, i, completions=2, version=version, batch_size=64)
            cfg.output = GcsUri(buckets["preds"], job)
            predict.run_index(cfg)
        outs[version] = read_jsonl(storage, buckets["preds"], f"{job}/predictions/in-000.npz.jsonl")
    manifest = json.loads(storage.bucket(buckets["preds"]).blob("job-pt/manifest.json").download_as_bytes())
    assert manifest["model"]["file"] == "model.pt"
    assert [line["id"] for line in outs["v1"]] == [f"item-0-{r}" for r in range(11)]  # ids from the .npz
    np.testing.assert_allclose(
        [line["probabilities"] for line in outs["v1"]], [line["probabilities"] for line in outs["v2"]], atol=2e-6
    )
    assert v1.model is not None


def test_permanent_errors_exit_2(storage, buckets, capsys):
    argv = [
        f"--input=gs://{buckets['inputs']}/batch",
        f"--model=gs://{buckets['models']}/mnist",
        f"--output=gs://{buckets['preds']}/job-x",
        "--completions=2",
        "--index=0",
    ]
    assert predict.main(argv) == 2
    assert "LATEST does not exist" in capsys.readouterr().err
    publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    assert predict.main([*argv, "--model-version=v9", "--output=gs://" + buckets["preds"] + "/job-y"]) == 2
    assert "v9 is not complete" in capsys.readouterr().err
    assert predict.main([*argv, "--index=2"]) == 2
    assert "outside 0..1" in capsys.readouterr().err
    assert not list(storage.list_blobs(buckets["preds"]))  # nothing written


def test_demo_batch_and_summary(storage, buckets):
    from jobgen.predict.demo import land_batch, summarize

    v1 = publish(f"gs://{buckets['models']}/mnist", "v1", seed=1, value=0.5)
    x = np.random.default_rng(3).normal(size=(20, 16)).astype(np.float32)
    y = expected(v1.model, x).argmax(1)
    y[:5] = (y[:5] + 1) % CLASSES  # 5 of 20 labels disagree with the model
    batch = land_batch(storage, buckets["inputs"], "landed", {"x": x, "y": y}, files=3)
    assert batch.marker == "landed/_SUCCESS" and batch.generation > 0
    for i in range(2):
        cfg = config(buckets, i, completions=2)
        cfg.input, cfg.glob = GcsUri(buckets["inputs"], "landed"), "*.npy"
        predict.run_index(cfg)
    summary = summarize(storage, f"gs://{buckets['preds']}/job-1", "job-1", "Complete", 1.0, batch, samples=3)
    assert summary.counts == {"inputs": 4, "predicted": 3, "quarantined": 1, "examples": 20}
    assert summary.accuracy == 0.75 and summary.model_version == "v1" and len(summary.samples) == 3
    assert "corrupt.npy" in summary.table()
