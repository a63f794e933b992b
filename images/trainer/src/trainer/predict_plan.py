"""Batch prediction, the job's shared state in GCS: the output layout, create-once writes, the plan
(model version + input list, fixed once per job), the shares, and completion (manifest.json, _SUCCESS).

See trainer.predict for the whole picture."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from trainer import gcs, registry
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer.predict")

PLAN = "_job/plan.json"
MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
PREDICTIONS = "predictions"
RAW = "raw"
QUARANTINE = "quarantine"
FORMAT = "trainer.predictions/v1"


def _precondition_failed(exc: BaseException) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.PreconditionFailed)


def create_once(uri: GcsUri, data: bytes, content_type: str, metadata: dict[str, str] | None = None) -> bool:
    """Create ``uri`` unless it exists (``ifGenerationMatch=0``). True if this call created it.

    A retry after a lost response sees 412 and reports False: the object is there, written once."""
    blob = gcs.blob(uri)
    if metadata:
        blob.metadata = metadata
    try:
        gcs.call(blob.upload_from_string, data, content_type=content_type, if_generation_match=0, what=f"create {uri}")
    except Exception as exc:
        if _precondition_failed(exc):
            return False
        raise
    return True


def read_json(uri: GcsUri) -> dict[str, Any] | None:
    from google.api_core import exceptions as gexc

    try:
        raw = gcs.call(gcs.blob(uri).download_as_bytes, what=f"read {uri}")
    except gexc.NotFound:
        return None
    doc = json.loads(raw)
    if not isinstance(doc, dict):
        raise TrainerError(f"{uri} is not a JSON object")
    return doc


def list_names(base: GcsUri, sub: str) -> dict[str, Any]:
    """Objects under ``base/sub/`` → {relative name: blob}."""
    prefix = base.join(sub).path + "/"
    blobs = gcs.list_blobs(base.bucket, f"list {base}/{sub}", prefix=prefix)
    return {b.name[len(prefix) :]: b for b in blobs}


@dataclass
class Config:
    input: GcsUri
    glob: str
    model: str
    model_version: str
    output: GcsUri
    index: int
    completions: int
    batch_size: int = 256
    device: str = "cpu"
    prefetch: int = 8
    writers: int = 8
    job_name: str = ""


def glob_regex(pattern: str) -> Any:
    """The same glob dialect as the spec (jobgen.predict.spec.glob_regex): ``*``/``?`` within a segment,
    ``**`` across segments, ``[...]`` classes."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        c = pattern[i]
        if c == "*":
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[" and pattern.find("]", i + 2) != -1:
            end = pattern.find("]", i + 2)
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(rf"^{out}$")


def list_inputs(prefix: GcsUri, glob: str) -> list[dict[str, Any]]:
    """Input objects under ``prefix`` matching ``glob``: name (relative), generation, size; sorted by name.

    Markers and hidden objects (a path segment starting with '_' or '.') are never inputs."""
    rx = glob_regex(glob)
    base = prefix.path + "/" if prefix.path else ""
    blobs = gcs.list_blobs(prefix.bucket, f"list {prefix}", prefix=base)
    out = []
    for b in blobs:
        rel = b.name[len(base) :]
        if not rel or rel.endswith("/") or any(seg.startswith(("_", ".")) for seg in rel.split("/")):
            continue
        if rx.match(rel):
            out.append({"name": rel, "generation": int(b.generation), "size": int(b.size or 0)})
    return sorted(out, key=lambda d: d["name"])


def resolve_model(model_uri: str, version: str) -> dict[str, Any]:
    """The model version to use: LATEST's target (read now, once) or the pinned ``version``."""
    reg = registry.Registry(model_uri)
    resolved_from = version
    latest = None
    if version == registry.LATEST:
        latest, gen = reg.latest()
        if latest is None or not latest.get("version"):
            raise TrainerError(
                f"no model to predict with: {reg.base.join(registry.LATEST)} does not exist "
                "(train and promote a model first, or pin a version)"
            )
        version = str(latest["version"])
        latest = {**latest, "generation": gen}
    vuri = reg.version_uri(version)
    names = set(list_names(reg.base, version))
    if registry.COMPLETE not in names:
        raise TrainerError(
            f"model version {vuri} is not complete ({registry.COMPLETE} missing): it does not exist "
            "or is still being published"
        )
    file = "model.pt2" if "model.pt2" in names else "model.pt" if "model.pt" in names else None
    if file is None:
        raise TrainerError(f"model version {vuri} has neither model.pt2 nor model.pt")
    lineage = read_json(vuri.join("lineage.json")) or {}
    return {
        "uri": str(vuri),
        "registry": str(reg.base),
        "version": version,
        "resolved_from": resolved_from,
        "file": file,
        "latest_pointer": latest,
        "lineage": lineage,
    }


def ensure_plan(cfg: Config) -> tuple[dict[str, Any], bool]:
    """The job's plan, created by this index if it is the first (True) or read (False)."""
    uri = cfg.output.join(PLAN)
    plan = read_json(uri)
    if plan is not None:
        return plan, False
    plan = {
        "format": FORMAT,
        "job": cfg.job_name,
        "input": {"prefix": str(cfg.input), "glob": cfg.glob},
        "model": resolve_model(cfg.model, cfg.model_version),
        "inputs": list_inputs(cfg.input, cfg.glob),
        "completions": cfg.completions,
        "created_at": registry.now(),
        "created_by_index": cfg.index,
    }
    if create_once(uri, json.dumps(plan, indent=1, sort_keys=True).encode(), "application/json"):
        return plan, True
    winner = read_json(uri)  # another index created it first: everybody uses the winner's plan
    if winner is None:
        raise TrainerError(f"{uri} vanished after a create conflict")
    return winner, False


def share(inputs: list[dict[str, Any]], index: int, completions: int) -> list[dict[str, Any]]:
    """Index ``index``'s inputs: every ``completions``-th, starting at ``index`` (disjoint, covering)."""
    return inputs[index::completions]


def finish_if_complete(cfg: Config, plan: dict[str, Any]) -> bool:
    """Write manifest.json and then _SUCCESS if every planned input has an output or a quarantine entry.

    Every index calls this after its own share is written, so the last index to finish sees every
    entry (GCS lists are strongly consistent). Both objects are created with ifGenerationMatch=0: when
    two indexes finish at once, one manifest wins and the other create is a no-op; an index retried
    after writing the manifest but not _SUCCESS writes _SUCCESS on its retry. Returns True if this
    call found the job complete."""
    outputs = {n[: -len(".jsonl")]: b for n, b in list_names(cfg.output, PREDICTIONS).items() if n.endswith(".jsonl")}
    quarantined = {n[: -len(".json")]: b for n, b in list_names(cfg.output, QUARANTINE).items() if n.endswith(".json")}
    inputs = plan["inputs"]
    missing = [e["name"] for e in inputs if e["name"] not in outputs and e["name"] not in quarantined]
    if missing:
        log.info("%d of %d inputs have no output yet (other indexes are still running)", len(missing), len(inputs))
        return False
    entries, reasons, examples = [], [], 0
    for e in inputs:
        name = e["name"]
        if name in outputs:
            rows = int((outputs[name].metadata or {}).get("rows", 0))
            examples += rows
            entries.append(
                {
                    "name": name,
                    "generation": e["generation"],
                    "examples": rows,
                    "predictions": str(cfg.output.join(PREDICTIONS, name + ".jsonl")),
                    "raw": str(cfg.output.join(RAW, name + ".npz")),
                }
            )
        else:
            reason = (quarantined[name].metadata or {}).get("reason", "")
            reasons.append(
                {
                    "name": name,
                    "generation": e["generation"],
                    "reason": reason,
                    "entry": str(cfg.output.join(QUARANTINE, name + ".json")),
                }
            )
            entries.append({"name": name, "generation": e["generation"], "quarantined": True})
    model = plan["model"]
    manifest = {
        "format": FORMAT,
        "job": plan.get("job"),
        "input": plan["input"],
        "model": {
            "version": model["version"],
            "uri": model["uri"],
            "file": model["file"],
            "resolved_from": model["resolved_from"],
            "lineage": model.get("lineage"),
        },
        "counts": {
            "inputs": len(inputs),
            "predicted": len(inputs) - len(reasons),
            "quarantined": len(reasons),
            "examples": examples,
        },
        "inputs": entries,
        "quarantined": reasons,
        "completions": plan["completions"],
        "completed_at": registry.now(),
        "completed_by_index": cfg.index,
    }
    wrote = create_once(
        cfg.output.join(MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode(), "application/json"
    )
    create_once(cfg.output.join(SUCCESS), b"", "text/plain")
    log.info("job complete: %s %s by this index", cfg.output.join(MANIFEST), "written" if wrote else "already written")
    return True
