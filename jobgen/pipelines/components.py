"""The pipeline's steps as KFP v2 lightweight Python components.

Each function below is the body of one component: KFP copies its source into the container
command, so every import is inside the function and nothing from this module is used at run time.
:func:`make_components` binds them to their images (``base_image``):

- ``validate-data``, ``evaluate``, ``register``: the trainer image (images/trainer: torch, the
  ``trainer`` package with its GCS data format and registry);
- ``train``: the watcher image (images/watcher: jobgen and the kubernetes client). It renders the
  embedded job spec with the run's hyperparameters, creates the PyTorchJob (server-side apply),
  waits for it with a timeout while printing its status, and deletes it per ``delete_policy``.

No ``from __future__ import annotations`` here: KFP reads the real annotations for the types.
"""

from typing import NamedTuple

from kfp import dsl


def validate_data(data_uri: str, min_examples: int) -> int:
    """Check the data set at ``data_uri`` before anything trains; returns the number of training examples.

    The manifest must parse (trainer.data.read_manifest), have train and val splits, every shard object
    must exist with the generation the manifest recorded, and there must be at least ``min_examples``
    training examples.
    """
    from trainer import data, gcs
    from trainer.gcs import GcsUri

    manifest = data.read_manifest(data_uri)
    problems = []
    for split in ("train", "val"):
        if not manifest.splits.get(split):
            problems.append(f"no {split!r} split (evaluate needs val, train needs train)")
    base = GcsUri.parse(manifest.uri, "DATA_URI")
    bucket = gcs.client().bucket(base.bucket)
    for split, shards in manifest.splits.items():
        for shard in shards:
            blob = bucket.get_blob(base.join(shard.name).path)
            if blob is None:
                problems.append(f"{split} shard {shard.name} is missing")
            elif shard.generation is not None and int(blob.generation) != int(shard.generation):
                problems.append(f"{split} shard {shard.name} has generation {blob.generation}, "
                                f"the manifest recorded {shard.generation}")
            if shard.records <= 0:
                problems.append(f"{split} shard {shard.name} has {shard.records} records")
    n_train = sum(s.records for s in manifest.splits.get("train", []))
    if n_train < min_examples:
        problems.append(f"{n_train} training examples, fewer than min_examples={min_examples}")
    if problems:
        raise ValueError(f"data set {manifest.uri} is not usable:\n  " + "\n  ".join(problems))
    n_val = sum(s.records for s in manifest.splits.get("val", []))
    print(f"data set {manifest.uri}: manifest generation {manifest.generation}, {n_train} train / {n_val} val "
          f"examples, {manifest.num_classes} classes, input dim {manifest.input_dim}", flush=True)
    return n_train


def train(spec_json: str, hyperparameters: dict, templates: dict, data_uri: str, output_uri: str,
          checkpoint_uri: str, namespace: str, run_id: str, timeout_seconds: int, delete_policy: str,
          poll_seconds: float) -> str:
    """Create the PyTorchJob for this run, wait for it, delete it per policy; returns the job's name.

    Parameters are checked first (unknown hyperparameters, type and range errors, a bad policy or
    timeout): a bad one fails the step before anything is created. The job's name derives from the
    spec name and the pipeline run id, so a retried step attaches to the same job.
    """
    import json
    import os
    import re
    import tempfile
    import time

    from jobgen import kube, names
    from jobgen.errors import UserError
    from jobgen.kubeflow import state_of
    from jobgen.loader import parse_spec
    from jobgen.render import render
    from jobgen.status import summarize
    from jobgen.validate import manifest_problems

    policies = ("Always", "OnSuccess", "Never")  # the component's source runs alone: no module constants
    errors = []
    if delete_policy not in policies:
        errors.append(f"delete_policy: must be one of {', '.join(policies)}, got {delete_policy!r}")
    if timeout_seconds <= 0:
        errors.append(f"timeout_seconds: must be > 0, got {timeout_seconds}")
    if poll_seconds <= 0:
        errors.append(f"poll_seconds: must be > 0, got {poll_seconds}")
    doc = json.loads(spec_json)
    if data_uri:
        doc.setdefault("storage", {})["data"] = data_uri
    if output_uri:
        doc.setdefault("storage", {})["output"] = output_uri
    if checkpoint_uri:
        doc.setdefault("storage", {})["checkpoints"] = checkpoint_uri
    if namespace:
        doc["namespace"] = namespace
    doc["name"] = names.derived(str(doc["name"]), run_id)
    annotations = dict(doc.get("annotations") or {})
    annotations["pipelines.kubeflow.org/run-id"] = run_id
    doc["annotations"] = annotations
    template_dir = None
    if templates:
        template_dir = tempfile.mkdtemp(prefix="jobgen-templates-")
        for fname, text in templates.items():
            with open(os.path.join(template_dir, os.path.basename(fname)), "w", encoding="utf-8") as fh:
                fh.write(text)
    try:
        spec = parse_spec(doc, "pipeline job spec")
        values = dict(hyperparameters)
        for hp_name, value in values.items():
            hp = spec.hyperparameters.get(hp_name)
            # KFP substitutes parameters into the dict as text, integers as protobuf numbers ("3.0").
            if hp is not None and hp.type == "int" and isinstance(value, (str, float)):
                text = str(value).strip()
                if re.fullmatch(r"[-+]?\d+\.0*", text):
                    values[hp_name] = text.split(".")[0]
        manifest = render(spec, values, template_dir, "pipeline parameters")
    except UserError as exc:
        errors.append(str(exc))
        manifest = None
    if manifest is not None:
        errors += [p.render("manifest") for p in manifest_problems(manifest)]
    if errors:
        raise ValueError("rejected before creating the job:\n  " + "\n  ".join(errors))

    name, kind = manifest["metadata"]["name"], manifest["kind"]
    ns = manifest["metadata"].get("namespace") or "default"
    cluster = kube.connect(None, os.environ.get("KUBECONFIG") or None)  # else the in-cluster config
    cluster.apply(manifest)
    print(f"applied {kind} {ns}/{name} (kube context {cluster.context}); waiting up to {timeout_seconds}s",
          flush=True)
    started = time.monotonic()
    last = None
    state = "Pending"
    try:
        while True:
            job = cluster.get_job(name, ns, kind)
            if job is None:
                raise RuntimeError(f"{kind} {ns}/{name} disappeared while the pipeline waited for it")
            state, _ = state_of(job)
            line = summarize(job, cluster.job_pods(name, ns))
            roles = " ".join(f"{r.role} {r.active} active/{r.succeeded} ok/{r.failed} failed" for r in line.roles)
            text = f"{state} [{roles}] {line.reason}".strip()
            if text != last:
                print(f"{time.monotonic() - started:7.1f}s  {name}: {text}", flush=True)
                last = text
            if state in ("Succeeded", "Failed"):
                break
            if time.monotonic() - started > timeout_seconds:
                state = "TimedOut"
                break
            time.sleep(poll_seconds)
    finally:
        delete = delete_policy == "Always" or (delete_policy == "OnSuccess" and state == "Succeeded")
        if delete:
            try:
                cluster.delete_job(kind, name, ns)
                print(f"deleted {kind} {ns}/{name} (delete_policy={delete_policy}, state {state})", flush=True)
            except Exception as exc:
                print(f"could not delete {kind} {ns}/{name}: {exc}", flush=True)
        else:
            print(f"kept {kind} {ns}/{name} (delete_policy={delete_policy}, state {state})", flush=True)
    if state == "TimedOut":
        raise TimeoutError(f"{kind} {ns}/{name} did not finish within {timeout_seconds}s")
    if state != "Succeeded":
        raise RuntimeError(f"{kind} {ns}/{name} {state}")
    return name


def evaluate(output_uri: str, data_uri: str, job_name: str, tolerance: float) -> NamedTuple(
        "Outputs", [("version", str), ("metric", str), ("value", float), ("mode", str)]):
    """Evaluate the model version that ``job_name`` published, independently of the trainer.

    Finds the version by its lineage's ``job_name`` (it must be complete and trained on ``data_uri``),
    loads its TorchScript model and recomputes val_accuracy and val_loss over the data set's val split.
    The recomputed promotion metric must agree with the trainer's metrics.json within ``tolerance``.
    """
    import collections
    import math

    import torch
    from trainer import data, gcs
    from trainer.gcs import GcsUri
    from trainer.model import default_batch
    from trainer.registry import Registry

    base = GcsUri.parse(output_uri, "OUTPUT_URI")
    bucket = gcs.client().bucket(base.bucket)
    published = Registry(output_uri).published_by([job_name]).get(job_name)
    if published is None:
        raise RuntimeError(f"no complete model version in {base} was published by job {job_name}")
    version, lineage = published.version, published.lineage
    vpath = f"{base.path.rstrip('/')}/{version}"
    trained_on = str((lineage.get("data") or {}).get("uri", "")).rstrip("/")
    if trained_on != data_uri.rstrip("/"):
        raise RuntimeError(f"model version {version} was trained on {trained_on}, not {data_uri}")
    recorded = published.metrics
    metric = recorded.get("promotion_metric") or "val_accuracy"
    mode = recorded.get("promotion_mode") or ("min" if metric == "val_loss" else "max")
    scripted = bucket.get_blob(f"{vpath}/model.torchscript.pt")
    if scripted is None:
        raise RuntimeError(f"model version {version} has no model.torchscript.pt to evaluate")
    import io

    net = torch.jit.load(io.BytesIO(scripted.download_as_bytes()), map_location="cpu").eval()
    manifest = data.read_manifest(data_uri)
    reader = data.ShardReader(manifest, "val", 0, 1, 256, shuffle=False, drop_last=False)
    loss_sum = correct = n = 0.0
    with torch.no_grad():
        for batch in reader.epoch(0):
            x, y = default_batch(batch)
            out = net(x)
            loss_sum += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += float((out.argmax(1) == y).sum())
            n += len(y)
    if n == 0:
        raise RuntimeError(f"the val split of {data_uri} is empty")
    measured = {"val_accuracy": correct / n, "val_loss": loss_sum / n}
    if metric not in measured:
        raise RuntimeError(f"cannot evaluate promotion metric {metric!r} (known: {', '.join(measured)})")
    value = measured[metric]
    want = recorded.get(metric)
    print(f"model {version} (job {job_name}): val_accuracy {measured['val_accuracy']:.4f}, "
          f"val_loss {measured['val_loss']:.4f} on {int(n)} val examples; trainer recorded {metric} {want}",
          flush=True)
    if want is None or not math.isfinite(float(want)) or abs(float(want) - value) > tolerance:
        raise RuntimeError(f"model {version} does not reproduce its recorded {metric}: measured {value:.6f}, "
                           f"metrics.json says {want} (tolerance {tolerance})")
    outputs = collections.namedtuple("Outputs", ["version", "metric", "value", "mode"])
    return outputs(version, metric, value, mode)


def register(output_uri: str, version: str, metric: str, value: float, mode: str) -> str:
    """Make the promotion decision for ``version``: LATEST points at it iff it beats the current LATEST.

    Uses the registry's compare-and-swap promotion, so it is idempotent: the trainer's own
    promotion, a retried step or a concurrent run cannot make a worse model LATEST. Returns the
    decision as JSON: {"version", "promoted", "latest", "latest_value"}.
    """
    import json

    from trainer.registry import Registry

    registry = Registry(output_uri)
    before, _ = registry.latest()
    promo = registry.promote(version, metric, value, mode)
    is_latest = promo.latest.get("version") == version
    decision = {"version": version, "metric": metric, "value": value, "mode": mode,
                "promoted": promo.promoted, "is_latest": is_latest,
                "previous": (before or {}).get("version"), "latest": promo.latest.get("version"),
                "latest_value": promo.latest.get("value")}
    if promo.promoted:
        print(f"promoted {version} ({metric} {value:.4f}) to LATEST of {output_uri}", flush=True)
    elif is_latest:
        print(f"{version} is already LATEST of {output_uri} ({metric} {value:.4f}; the trainer promoted it)",
              flush=True)
    else:
        print(f"{version} not promoted: LATEST stays {promo.latest.get('version')} "
              f"({metric} {promo.latest.get('value')} vs {value:.4f}, {mode} wins)", flush=True)
    return json.dumps(decision, sort_keys=True)


class Components(NamedTuple):
    validate_data: object
    train: object
    evaluate: object
    register: object


def make_components(trainer_image: str, launcher_image: str) -> Components:
    """The four components, bound to their images."""
    return Components(
        validate_data=dsl.component(validate_data, base_image=trainer_image),
        train=dsl.component(train, base_image=launcher_image),
        evaluate=dsl.component(evaluate, base_image=trainer_image),
        register=dsl.component(register, base_image=trainer_image),
    )
