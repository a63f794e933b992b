"""The demo's prediction step, after a model was promoted: an input batch lands in GCS, one Indexed
Job predicts it with the registry's LATEST model, and a summary shows counts, version and samples.

    summary = run_after_promotion(cluster, storage, models_uri="gs://demo-models/mnist", ...)
    print(summary.table())

The Job is rendered by :func:`jobgen.predict.trigger.manifest_for_data` for the batch's ``_SUCCESS``
marker, exactly as the watcher does, and submitted with :func:`jobgen.predict.trigger.create_once`.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobgen.predict.spec import PredictionSpec
from jobgen.predict.trigger import create_once, manifest_for_data

MARKER = "_SUCCESS"


@dataclass
class Batch:
    uri: str  # gs://bucket/prefix of the batch
    bucket: str
    marker: str  # object name of its _SUCCESS
    generation: int  # of the marker
    labels: dict[str, list[int]]  # input name → true classes, for the summary's accuracy
    corrupt: list[str] = field(default_factory=list)


@dataclass
class PredictionSummary:
    job: str
    state: str
    seconds: float
    output: str
    model_version: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    accuracy: float | None = None

    def table(self) -> str:
        from jobgen.status import table

        c = self.counts
        rows = [
            ["JOB", "STATE", "SECONDS", "MODEL VERSION", "INPUTS", "PREDICTED", "QUARANTINED", "EXAMPLES", "ACCURACY"],
            [
                self.job,
                self.state,
                f"{self.seconds:.0f}",
                self.model_version or "-",
                str(c.get("inputs", "-")),
                str(c.get("predicted", "-")),
                str(c.get("quarantined", "-")),
                str(c.get("examples", "-")),
                "-" if self.accuracy is None else f"{self.accuracy:.4f}",
            ],
        ]
        lines = [table(rows), "", f"outputs: {self.output}/ (predictions/*.jsonl, raw/*.npz, manifest.json)"]
        for q in self.quarantined:
            lines.append(f"quarantined {q['name']}: {q['reason']}")
        if self.samples:
            lines.append("sample predictions:")
            lines.append(
                table(
                    [["ID", "CLASS", "P(CLASS)", "TRUE"]]
                    + [
                        [s["id"], str(s["class"]), f"{s['probability']:.3f}", str(s.get("label", "-"))]
                        for s in self.samples
                    ]
                )
            )
        return "\n".join(lines)


def land_batch(
    storage: Any, bucket: str, prefix: str, arrays: dict[str, Any], files: int = 3, corrupt: bool = True
) -> Batch:
    """Write ``arrays['x']`` (and labels ``arrays['y']``) as ``files`` .npy inputs, one corrupt input,
    then the ``_SUCCESS`` marker last."""
    import numpy as np

    x, y = arrays["x"], arrays["y"]
    b = storage.bucket(bucket)
    labels: dict[str, list[int]] = {}
    for i, part in enumerate(np.array_split(np.arange(len(x)), files)):
        buf = io.BytesIO()
        np.save(buf, x[part].astype(np.float32))
        name = f"part-{i:03d}.npy"
        b.blob(f"{prefix}/{name}").upload_from_string(buf.getvalue())
        labels[name] = [int(v) for v in y[part]]
    bad = ["corrupt.npy"] if corrupt else []
    for name in bad:
        b.blob(f"{prefix}/{name}").upload_from_string(b"\x93NUMPY truncated")
    marker = b.blob(f"{prefix}/{MARKER}")
    marker.upload_from_string(b"")
    marker.reload()
    return Batch(
        uri=f"gs://{bucket}/{prefix}",
        bucket=bucket,
        marker=f"{prefix}/{MARKER}",
        generation=int(marker.generation),
        labels=labels,
        corrupt=bad,
    )


def spec_for(
    name: str,
    namespace: str,
    models_uri: str,
    output: str,
    input_prefix: str,
    image: str,
    pod_labels: dict[str, str],
    pod_annotations: dict[str, str],
    parallelism: int = 3,
    env: dict[str, str] | None = None,
) -> PredictionSpec:
    """The demo's prediction spec (CPU, ``parallelism`` indexes at once, LATEST)."""
    from jobgen.predict.load import parse

    return parse(
        {
            "kind": "BatchPrediction",
            "name": name,
            "namespace": namespace,
            "image": image,
            "input": {"prefix": input_prefix, "glob": "*.npy"},
            "model": {"uri": models_uri},
            "output": output,
            "batchSize": 128,
            "device": "cpu",
            "parallelism": parallelism,
            "backoffLimitPerIndex": 1,
            "labels": pod_labels,
            "podAnnotations": pod_annotations,
            "env": {"OMP_NUM_THREADS": "1", **(env or {})},
        },
        f"demo prediction {name}",
    )


def wait(cluster: Any, name: str, namespace: str, timeout: float, say: Callable[[str], None]) -> str:
    """Poll the Job until it is Complete or Failed; returns that state."""
    from jobgen.predict.status import job_state

    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        job = cluster.get("batch/v1", "Job", name, namespace)
        state = job_state(job)[0] if job else "Pending"
        if state != seen:
            status = (job or {}).get("status") or {}
            say(f"  {name}: {state} (indexes succeeded {status.get('succeeded', 0)}, active {status.get('active', 0)})")
            seen = state
        if state in ("Complete", "Failed"):
            return state
        time.sleep(0.5)
    return "Timeout"


def summarize(
    storage: Any, output: str, name: str, state: str, seconds: float, batch: Batch, samples: int = 5
) -> PredictionSummary:
    """Read manifest.json and a few predictions back from GCS."""
    bucket, _, path = output[len("gs://") :].partition("/")
    summary = PredictionSummary(job=name, state=state, seconds=seconds, output=output)
    blob = storage.bucket(bucket).blob(f"{path}/manifest.json")
    if not blob.exists():
        return summary
    manifest = json.loads(blob.download_as_bytes())
    summary.model_version = manifest["model"]["version"]
    summary.counts = manifest["counts"]
    summary.quarantined = manifest["quarantined"]
    right = total = 0
    for entry in manifest["inputs"]:
        if entry.get("quarantined"):
            continue
        text = storage.bucket(bucket).blob(f"{path}/predictions/{entry['name']}.jsonl").download_as_text()
        truth = batch.labels.get(entry["name"], [])
        for row, line in enumerate(text.splitlines()):
            pred = json.loads(line)
            label = truth[row] if row < len(truth) else None
            right += label == pred["class"]
            total += label is not None
            if len(summary.samples) < samples:
                summary.samples.append(
                    {
                        "id": pred["id"],
                        "class": pred["class"],
                        "label": label,
                        "probability": pred["probabilities"][pred["class"]],
                    }
                )
    summary.accuracy = right / total if total else None
    return summary


def run_after_promotion(
    cluster: Any,
    storage: Any,
    *,
    models_uri: str,
    input_bucket: str,
    input_prefix: str,
    output: str,
    namespace: str,
    arrays: dict[str, Any],
    pod_labels: dict[str, str],
    pod_annotations: dict[str, str],
    image: str = "local/trainer:dev",
    name: str = "mnist-predict",
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    say: Callable[[str], None] = print,
) -> PredictionSummary:
    """Land a batch, create its prediction Job as the watcher would, wait, and summarize."""
    batch = land_batch(storage, input_bucket, input_prefix, arrays)
    say(
        f"  wrote {batch.uri}/ ({len(batch.labels)} inputs, {sum(map(len, batch.labels.values()))} examples, "
        f"{len(batch.corrupt)} corrupt), then {MARKER}"
    )
    spec = spec_for(name, namespace, models_uri, output, batch.uri, image, pod_labels, pod_annotations, env=env)
    manifest = manifest_for_data(spec, batch.uri, batch.bucket, batch.marker, batch.generation, trigger="demo")
    job = manifest["metadata"]["name"]
    started = time.monotonic()
    created = create_once(cluster, manifest)
    again = create_once(cluster, manifest)  # a duplicate notification: no second job
    say(
        f"  Indexed Job {job} ({spec.indexes} indexes) {'created' if created else 'existed'}; "
        f"duplicate submission {'created another' if again else 'created nothing'}"
    )
    state = wait(cluster, job, namespace, timeout, say)
    out = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    out_uri = next(a.split("=", 1)[1] for a in out if a.startswith("--output="))
    return summarize(storage, out_uri, job, state, time.monotonic() - started, batch)
