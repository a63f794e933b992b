"""The model registry in GCS: versioned outputs and an atomically promoted LATEST pointer.

No torch or TensorFlow import here: the PyTorch and TF trainers share it. Layout, for
``OUTPUT_URI=gs://<models>/<model>``::

    <version>/model.pt          # PyTorch: state_dict
    <version>/model.pt2         # PyTorch: torch.export program (input signature: lineage.json "export")
    <version>/saved_model/…     # TensorFlow: a SavedModel directory (tf_trainer)
    <version>/metrics.json      # final metrics, the promotion metric named
    <version>/lineage.json      # data URI + generations, job, image, hyperparameters, code, times, world size
    <version>/curves.csv        # step, epoch, train_loss, val_loss, val_accuracy, lr per epoch
    <version>/_COMPLETE         # written last: a version without it is unfinished
    LATEST                      # {"version", "uri", "metric", "value", "mode", "promoted_at"}

Versions are unique: ``v<UTC time>-<8 random hex>`` by default, and every object of a version is
uploaded with ``ifGenerationMatch=0``, so two publishers of the same version (sweep trials with a
pinned version) cannot overwrite each other: the second fails with a message.

Promotion reads LATEST with its generation, compares metrics, and writes the new pointer with
``ifGenerationMatch`` = that generation (0 when there is none). A lost race (HTTP 412) re-reads and
compares again, so of any number of concurrent promoters the best model always ends up as LATEST,
and a worse one never replaces a better one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from trainer import gcs
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer")

LATEST = "LATEST"
COMPLETE = "_COMPLETE"
CURVE_FIELDS = ["step", "epoch", "train_loss", "val_loss", "val_accuracy", "lr"]


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_version() -> str:
    """A version id that cannot collide: UTC time to the second plus 32 random bits."""
    import secrets

    return time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


def image_lineage(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The image reference, its digest when known, and the git SHA (set by the Dockerfile/deploy).

    ``TRAINER_IMAGE_DIGEST`` (sha256:…) wins; else a digest inside ``TRAINER_IMAGE`` (…@sha256:…)."""
    import os
    import re

    env = os.environ if env is None else env
    image = env.get("TRAINER_IMAGE", "")
    digest = env.get("TRAINER_IMAGE_DIGEST", "")
    if not digest:
        m = re.search(r"@(sha256:[0-9a-f]{64})$", image)
        digest = m.group(1) if m else ""
    return {"image": image, "image_digest": digest or None, "git_sha": env.get("TRAINER_GIT_SHA", "")}


def torch_files(net: Any, example: Any) -> tuple[dict[str, bytes], dict[str, Any]]:
    """``model.pt`` (state_dict) and ``model.pt2`` (torch.export program with a dynamic batch
    dimension), and what happened to the export (its input signature, or why it failed)."""
    import copy
    import io

    import torch

    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, buf)
    files = {"model.pt": buf.getvalue()}
    cpu = copy.deepcopy(net).cpu().eval()
    x = example.detach().cpu()
    if x.is_floating_point():
        x = x.float()
    info: dict[str, Any] = {
        "ok": False,
        "input": {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", ""), "dynamic_dims": [0]},
    }
    try:
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        with torch.no_grad():
            prog = torch.export.export(cpu, (x,), dynamic_shapes=({0: batch},))
        pbuf = io.BytesIO()
        torch.export.save(prog, pbuf)
        files["model.pt2"] = pbuf.getvalue()
        info["ok"] = True
    except Exception as exc:
        info["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        log.error(  # noqa: TRY400 - the reason is recorded; a traceback would bury it
            "torch.export could not export the model (%s): publishing model.pt only", info["error"]
        )
    return files, info


def better(value: float, current: float, mode: str) -> bool:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be max or min, got {mode!r}")
    if math.isnan(value):
        return False
    if math.isnan(current):
        return True
    return value > current if mode == "max" else value < current


def curves_csv(rows: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    fields = list(CURVE_FIELDS) + sorted({k for r in rows for k in r} - set(CURVE_FIELDS))
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in fields})
    return buf.getvalue().encode()


@dataclass
class Promotion:
    promoted: bool
    latest: dict[str, Any]  # the pointer as it is after this call
    attempts: int


class Registry:
    def __init__(self, output_uri: str) -> None:
        self.base = GcsUri.parse(output_uri, "OUTPUT_URI")
        if not self.base.path:
            raise TrainerError(
                f"OUTPUT_URI must name a model under a bucket, gs://<models>/<model>, got {output_uri!r}"
            )

    def version_uri(self, version: str) -> GcsUri:
        return self.base.join(version)

    def publish(
        self,
        version: str,
        files: Mapping[str, bytes],
        metrics: Mapping[str, Any],
        lineage: Mapping[str, Any],
        curves: Sequence[Mapping[str, Any]],
    ) -> str:
        """Upload one version's files; ``_COMPLETE`` last. Returns the version's URI."""
        if not version or "/" in version or version in (LATEST, COMPLETE) or version.startswith("."):
            raise TrainerError(f"bad model version {version!r}")
        vuri = self.version_uri(version)
        objects = dict(files)
        objects["metrics.json"] = json.dumps(dict(metrics), indent=1, sort_keys=True).encode()
        objects["lineage.json"] = json.dumps(dict(lineage), indent=1, sort_keys=True, default=str).encode()
        objects["curves.csv"] = curves_csv(curves)
        from google.api_core import exceptions as gexc

        objects[COMPLETE] = now().encode()  # last (dicts keep insertion order)
        for name, data in objects.items():
            b = gcs.blob(vuri.join(name))
            ctype = (
                "application/json"
                if name.endswith(".json")
                else (
                    "text/csv"
                    if name.endswith(".csv")
                    else "text/plain"
                    if name == COMPLETE
                    else "application/octet-stream"
                )
            )
            try:
                gcs.call(
                    b.upload_from_string,
                    data,
                    content_type=ctype,
                    if_generation_match=0,
                    what=f"upload {vuri.join(name)}",
                )
            except gexc.PreconditionFailed:
                raise TrainerError(
                    f"model version {version} exists already at {vuri} ({name}): versions are "
                    "immutable; pick another --model-version (or leave it unset for a unique one)"
                ) from None
        return str(vuri)

    def latest(self) -> tuple[dict[str, Any] | None, int]:
        """The LATEST pointer and its generation (None, 0 when there is none)."""
        from google.api_core import exceptions as gexc

        uri = self.base.join(LATEST)
        b = gcs.call(gcs.client().bucket(uri.bucket).get_blob, uri.path, what=f"stat {uri}")
        if b is None:
            return None, 0
        try:
            raw = gcs.call(b.download_as_bytes, if_generation_match=b.generation, what=f"read {uri}")
        except (gexc.NotFound, gexc.PreconditionFailed):
            return self.latest()  # replaced between the two calls: read again
        return json.loads(raw), int(b.generation)

    def promote(self, version: str, metric: str, value: float, mode: str = "max", max_attempts: int = 100) -> Promotion:
        """Point LATEST at ``version`` if ``value`` beats the current LATEST's (compare-and-swap)."""
        from google.api_core import exceptions as gexc

        if mode not in ("max", "min"):
            raise TrainerError(f"promotion mode must be max or min, got {mode!r}")
        doc = {
            "version": version,
            "uri": str(self.version_uri(version)),
            "metric": metric,
            "value": float(value),
            "mode": mode,
            "promoted_at": now(),
        }
        for attempt in range(1, max_attempts + 1):
            cur, gen = self.latest()
            if cur is not None:
                if cur.get("metric") != metric or cur.get("mode", mode) != mode:
                    raise TrainerError(
                        f"cannot promote {version}: LATEST of {self.base} ({cur.get('version')}) was promoted on "
                        f"{cur.get('metric')!r} ({cur.get('mode')}), this model on {metric!r} ({mode}); values of "
                        "different metrics are not comparable. Promote on the same --metric, or move LATEST by hand"
                    )
                if cur.get("version") == version or not better(float(value), float(cur.get("value", math.nan)), mode):
                    return Promotion(False, cur, attempt)
            b = gcs.blob(self.base.join(LATEST))
            try:
                gcs.call(
                    b.upload_from_string,
                    json.dumps(doc, indent=1),
                    content_type="application/json",
                    if_generation_match=gen,
                    what=f"update {self.base.join(LATEST)}",
                )
                return Promotion(True, doc, attempt)
            except gexc.PreconditionFailed:
                time.sleep(0.01 * attempt)  # somebody else moved it: read again and compare
        raise TrainerError(f"could not promote {version} to {self.base.join(LATEST)} after {max_attempts} attempts")

    def published_by(self, job_names: Collection[str]) -> dict[str, Published]:
        """For each of ``job_names``, the newest complete version whose ``lineage.json`` names it.

        The one scan for "the model version job X published" (sweeps rank trials by it, the
        pipeline's evaluate step and the demo read it): one listing of the registry, then the
        lineage and metrics of the versions that match."""
        wanted = set(job_names)
        prefix = self.base.path.rstrip("/") + "/"
        found: dict[str, tuple[str, str, dict[str, Any]]] = {}
        complete: set[str] = set()
        lineages = []
        for blob in gcs.list_blobs(self.base.bucket, f"list {self.base}", prefix=prefix):
            rest = blob.name[len(prefix) :]
            version, _, leaf = rest.partition("/")
            if leaf == COMPLETE:
                complete.add(version)
            elif leaf == "lineage.json":
                lineages.append((version, blob))
        for version, blob in lineages:
            if version not in complete:
                continue
            lineage = json.loads(gcs.call(blob.download_as_bytes, what=f"read {blob.name}"))
            job = lineage.get("job_name")
            if job in wanted:
                key = str(lineage.get("ended_at", ""))
                if job not in found or (key, version) > found[job][:2]:
                    found[job] = (key, version, lineage)
        out: dict[str, Published] = {}
        for job, (_, version, lineage) in found.items():
            metrics = self.version_uri(version).join("metrics.json")
            raw = gcs.call(gcs.blob(metrics).download_as_bytes, what=f"read {metrics}")
            out[job] = Published(
                version=version, uri=str(self.version_uri(version)), lineage=lineage, metrics=json.loads(raw)
            )
        return out


@dataclass
class Published:
    """One complete registry version and what it records."""

    version: str
    uri: str
    lineage: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def metric(self) -> str | None:
        name = self.metrics.get("promotion_metric")
        return str(name) if name else None

    @property
    def value(self) -> float | None:
        v = self.metrics.get(self.metric) if self.metric else None
        return float(v) if v is not None else None
