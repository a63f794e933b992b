"""Batch prediction, the inputs: download one planned input generation and decode it (.npy/.npz);
anything unusable becomes a quarantine reason instead of an error."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer import gcs
from trainer.gcs import GcsUri


class Corrupt(Exception):
    """An input that cannot be predicted; its message is the quarantine reason."""


@dataclass
class Item:
    name: str
    generation: int
    x: np.ndarray | None = None  # float32, axis 0 = examples
    ids: list[str] = field(default_factory=list)
    reason: str | None = None  # set: quarantined


def decode(name: str, data: bytes) -> tuple[np.ndarray, list[str] | None]:
    """``.npy`` (axis 0 = examples) or ``.npz`` (array ``x``, or its only array; optional ``id``)."""
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise Corrupt(f"not a .npy/.npz array file: {type(exc).__name__}: {str(exc)[:200]}") from None
    ids = None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = "x" if "x" in keys else keys[0] if len(keys) == 1 else None
            if key is None:
                raise Corrupt(f".npz without an array named x (arrays: {', '.join(keys) or 'none'})")
            try:
                x = loaded[key]
                ids = [str(v) for v in loaded["id"].tolist()] if "id" in keys else None
            except Exception as exc:
                raise Corrupt(f"unreadable .npz member: {type(exc).__name__}: {str(exc)[:200]}") from None
    else:
        x = loaded
    if x.ndim < 1 or x.shape[0] == 0:
        raise Corrupt(f"no examples: array shape {list(x.shape)} (axis 0 indexes the examples)")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise Corrupt(f"array dtype {x.dtype} is not numeric")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise Corrupt("array contains NaN or infinite values")
    if ids is not None and len(ids) != x.shape[0]:
        raise Corrupt(f"id has {len(ids)} entries for {x.shape[0]} examples")
    return x, ids


def fetch(base: GcsUri, entry: dict[str, Any]) -> Item:
    """Download the planned generation of one input and decode it; failures become a quarantine reason."""
    from google.api_core import exceptions as gexc

    name, generation = entry["name"], int(entry["generation"])
    item = Item(name, generation)
    uri = base.join(name)
    try:
        data = gcs.call(gcs.blob(uri, generation=generation).download_as_bytes, what=f"read {uri}")
        x, ids = decode(name, data)
    except gexc.NotFound:
        item.reason = f"generation {generation} of {uri} no longer exists (overwritten or deleted after the plan)"
        return item
    except gexc.Forbidden as exc:
        item.reason = f"permission denied reading {uri}: {exc.message}"
        return item
    except Corrupt as exc:
        item.reason = str(exc)
        return item
    item.x = x
    item.ids = ids if ids is not None else [f"{name}:{i}" for i in range(x.shape[0])]
    return item
