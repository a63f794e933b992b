"""Batch prediction, the model: a registry version's model.pt2 (torch.export) or model.pt (state dict
into the trainer's model class), ready to call on batches."""

from __future__ import annotations

import argparse
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import gcs
from trainer.gcs import GcsUri, TrainerError
from trainer.predict_plan import read_json


@dataclass
class LoadedModel:
    fn: Callable[[Any], Any]
    static_batch: int | None  # a torch.export program with a fixed batch size
    file: str


def _static_batch(program: Any) -> int | None:
    try:
        for spec in program.graph_signature.input_specs:
            if getattr(spec.kind, "name", "") != "USER_INPUT":
                continue
            node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == spec.arg.name)
            dim = node.meta["val"].shape[0]
            return int(dim) if isinstance(dim, int) else None
    except Exception:
        return None
    return None


def load_model(info: dict[str, Any], device: Any) -> LoadedModel:
    """model.pt2 (a torch.export program) when present, else model.pt into the trainer's model class."""
    import torch

    vuri = GcsUri.parse(info["uri"])
    data = gcs.call(gcs.blob(vuri.join(info["file"])).download_as_bytes, what=f"read {vuri}/{info['file']}")
    if info["file"] == "model.pt2":
        program = torch.export.load(io.BytesIO(data))
        module = program.module().to(device)
        return LoadedModel(module, _static_batch(program), "model.pt2")
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    lineage = info.get("lineage") or {}
    hp = dict(lineage.get("hyperparameters") or {})
    hook = str(hp.get("model") or "trainer.model:default_model")
    module_name, _, fn_name = hook.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise TrainerError(f"model hook {hook!r} (from lineage.json) cannot be imported: {exc}") from None
    input_dim, num_classes = _dims(lineage)
    net = factory(input_dim, num_classes, argparse.Namespace(**hp))
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise TrainerError(f"model.pt of {vuri} does not fit {hook}: {str(exc).splitlines()[0]}") from None
    net.to(device).eval()
    return LoadedModel(net, None, "model.pt")


def _dims(lineage: dict[str, Any]) -> tuple[int, int]:
    """input_dim and num_classes of a state_dict-only model: from lineage, or its training data's manifest."""
    if lineage.get("input_dim") and lineage.get("num_classes"):
        return int(lineage["input_dim"]), int(lineage["num_classes"])
    data_uri = (lineage.get("data") or {}).get("uri")
    manifest = read_json(GcsUri.parse(data_uri).join("manifest.json")) if data_uri else None
    if not manifest:
        raise TrainerError(
            "model.pt alone does not say its input and class counts, and lineage.json names no "
            "readable training data manifest; publish model.pt2 (torch.export) with the model"
        )
    shape = manifest["features"]["x"]["shape"]
    return int(np.prod(shape)) if shape else 1, int(manifest["num_classes"])
