"""Versioned sharded data sets in GCS, read per rank with DistributedSampler semantics.

Layout under a data URI ``gs://bucket/prefix`` (docs/trainer.md has the full description)::

    manifest.json                     # written last; lists every shard with its generation
    train-00000-of-00008.npz          # numpy .npz, uncompressed, no pickles; arrays share dim 0
    ...
    val-00000-of-00002.npz

A manifest names each shard's object *generation*, and readers fetch exactly that generation, so
a run reads one consistent version of the data set even while a newer version is being written,
and lineage can name it (manifest generation + shard generations).

Reading (no torch here, so the TF trainer shares it): for epoch ``e`` the shard order is a
permutation seeded by ``(seed, e)``, padded by wrap-around to a multiple of the world size, and rank
``r`` takes ``order[r::world]`` (DistributedSampler's rule, applied to shards). Records are shuffled
within each shard by ``(seed, e, shard)``. Every rank runs the same number of steps per epoch
(the smallest rank's share, drop-last), computed from the manifest alone. A reader streams its
shards one at a time with a download-ahead thread, and can start at any step of an epoch
(resume) without downloading the shards before it.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import queue
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import gcs
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer")

FORMAT = "trainer.shards/v1"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Shard:
    name: str
    records: int
    generation: int | None = None
    size: int | None = None
    crc32c: str | None = None


@dataclass
class Manifest:
    uri: str  # the data set's prefix, gs://…
    generation: int | None  # of manifest.json
    features: dict[str, Any]
    num_classes: int
    splits: dict[str, list[Shard]]
    meta: dict[str, Any]

    @property
    def input_dim(self) -> int:
        shape = self.features["x"]["shape"]
        return int(np.prod(shape)) if shape else 1

    def lineage(self) -> dict[str, Any]:
        return {"uri": self.uri, "manifest_generation": self.generation,
                "shards": {s.name: s.generation for split in self.splits.values() for s in split}}


# ---------------------------------------------------------------------------------------------
# Sources: what a data set is made from. A source is ``fn(seed) -> (arrays, num_classes)``.


def synthetic(seed: int = 0, n: int = 4096, dim: int = 32, classes: int = 10) -> tuple[dict[str, np.ndarray], int]:
    """A teacher-network classification task: labels from a fixed random 2-layer tanh net.

    Not linearly separable, learnable by a small MLP, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(dim, 64)) / np.sqrt(dim)
    w2 = rng.normal(size=(64, classes))
    x = rng.normal(size=(n, dim)).astype(np.float32)
    y = np.argmax(np.tanh(x @ w1 * 2.0) @ w2, axis=1).astype(np.int64)
    return {"x": x, "y": y}, classes


def digits(seed: int = 0) -> tuple[dict[str, np.ndarray], int]:
    """scikit-learn's bundled 8x8 digits (1,797 images; shipped inside the wheel, nothing downloaded)."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TrainerError("the digits source needs scikit-learn: pip install scikit-learn") from None
    d = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(d.target))
    return {"x": (d.data[order] / 16.0).astype(np.float32), "y": d.target[order].astype(np.int64)}, 10


SOURCES: dict[str, Callable[..., tuple[dict[str, np.ndarray], int]]] = {"synthetic": synthetic, "digits": digits}


def load_hook(spec: str, what: str) -> Callable[..., Any]:
    """``module:function`` → the function, with a clear error when it is not there."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise TrainerError(f"{what} must be module:function, got {spec!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise TrainerError(f"{what} {spec!r}: cannot import {module!r}: {exc}") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise TrainerError(f"{what} {spec!r}: {module!r} has no callable {attr!r}")
    return fn


def source(name: str) -> Callable[..., tuple[dict[str, np.ndarray], int]]:
    return SOURCES[name] if name in SOURCES else load_hook(name, "data source")


# ---------------------------------------------------------------------------------------------
# Writing


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _features(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:])} for k, v in arrays.items()}


def split_arrays(arrays: dict[str, np.ndarray], val_fraction: float) -> dict[str, dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    if any(len(v) != n for v in arrays.values()):
        raise TrainerError("all arrays of a data set must have the same length")
    arrays = {"id": np.arange(n, dtype=np.int64), **arrays}
    n_val = int(round(n * val_fraction))
    out = {"train": {k: v[n_val:] for k, v in arrays.items()}}
    if n_val:
        out["val"] = {k: v[:n_val] for k, v in arrays.items()}
    return out


def write_dataset(uri: str, arrays: dict[str, np.ndarray], num_classes: int, shards: int = 8,
                  val_shards: int = 2, val_fraction: float = 0.2, meta: dict[str, Any] | None = None) -> Manifest:
    """Write shards, then the manifest naming their generations. Returns the manifest."""
    base = GcsUri.parse(uri, "data URI")
    parts = split_arrays(arrays, val_fraction)
    splits: dict[str, list[Shard]] = {}
    for split, data in parts.items():
        n_shards = shards if split == "train" else val_shards
        n = len(data["id"])
        if n < n_shards:
            raise TrainerError(f"{split}: {n} records cannot fill {n_shards} shards")
        bounds = np.linspace(0, n, n_shards + 1).astype(int)
        splits[split] = []
        for i in range(n_shards):
            name = f"{split}-{i:05d}-of-{n_shards:05d}.npz"
            payload = _npz_bytes({k: v[bounds[i]:bounds[i + 1]] for k, v in data.items()})
            b = gcs.blob(base.join(name))
            gcs.with_retries(lambda b=b, p=payload: b.upload_from_string(p, content_type="application/octet-stream"),
                             f"upload {base.join(name)}")
            splits[split].append(Shard(name, int(bounds[i + 1] - bounds[i]), b.generation, len(payload),
                                       f"{zlib.crc32(payload):08x}"))
    doc = {"format": FORMAT, "features": _features(parts["train"]), "num_classes": int(num_classes),
           "splits": {k: [s.__dict__ for s in v] for k, v in splits.items()},
           "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {})}}
    mb = gcs.blob(base.join(MANIFEST))
    gcs.with_retries(lambda: mb.upload_from_string(json.dumps(doc, indent=1), content_type="application/json"),
                     f"upload {base.join(MANIFEST)}")
    return Manifest(str(base), mb.generation, doc["features"], int(num_classes), splits, doc["meta"])


def in_memory(arrays: dict[str, np.ndarray], num_classes: int, shards: int = 8, val_shards: int = 2,
              val_fraction: float = 0.2) -> tuple[Manifest, dict[str, bytes]]:
    """The same layout kept in memory (no DATA_URI: the default generated data set)."""
    parts = split_arrays(arrays, val_fraction)
    blobs: dict[str, bytes] = {}
    splits: dict[str, list[Shard]] = {}
    for split, data in parts.items():
        n_shards = shards if split == "train" else val_shards
        bounds = np.linspace(0, len(data["id"]), n_shards + 1).astype(int)
        splits[split] = []
        for i in range(n_shards):
            name = f"{split}-{i:05d}-of-{n_shards:05d}.npz"
            blobs[name] = _npz_bytes({k: v[bounds[i]:bounds[i + 1]] for k, v in data.items()})
            splits[split].append(Shard(name, int(bounds[i + 1] - bounds[i])))
    return Manifest("memory://", None, _features(parts["train"]), num_classes, splits, {}), blobs


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(uri: str) -> Manifest:
    base = GcsUri.parse(uri, "DATA_URI")
    from google.api_core import exceptions as gexc

    mb = gcs.blob(base.join(MANIFEST))
    try:
        raw = gcs.with_retries(mb.download_as_bytes, f"read {base.join(MANIFEST)}")
    except gexc.NotFound:
        raise TrainerError(f"no data set at {base}: {base.join(MANIFEST)} does not exist "
                           "(write one with `python -m trainer.data write URI`)") from None
    except gexc.Forbidden as exc:
        raise TrainerError(f"cannot read {base.join(MANIFEST)}: permission denied ({exc.message})") from None
    try:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        splits = {k: [Shard(**s) for s in v] for k, v in doc["splits"].items()}
        if not splits.get("train"):
            raise ValueError("no train shards")
        return Manifest(str(base), mb.generation, doc["features"], int(doc["num_classes"]), splits,
                        doc.get("meta", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise TrainerError(f"bad manifest {base.join(MANIFEST)}: {exc}") from None


def shard_assignment(n_shards: int, world: int, rank: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """DistributedSampler's rule on shard indices: permute by (seed, epoch), pad by wrap-around, stride."""
    order = (np.random.default_rng([seed, epoch]).permutation(n_shards) if shuffle
             else np.arange(n_shards)).tolist()
    total = -(-n_shards // world) * world
    order += (order * (total // max(1, n_shards) + 1))[: total - n_shards]
    return order[rank:total:world]


class ShardReader:
    """Batches of one rank's shards of one split, streamed from GCS (or memory)."""

    def __init__(self, manifest: Manifest, split: str, rank: int, world: int, batch_size: int, seed: int = 0,
                 shuffle: bool = True, blobs: dict[str, bytes] | None = None, prefetch: int = 1,
                 drop_last: bool = True) -> None:
        if split not in manifest.splits:
            raise TrainerError(f"data set {manifest.uri} has no {split!r} split")
        self.manifest, self.split, self.rank, self.world = manifest, split, rank, world
        self.batch_size, self.seed, self.shuffle, self.blobs = batch_size, seed, shuffle, blobs
        self.prefetch, self.drop_last = prefetch, drop_last
        self.shards = manifest.splits[split]
        self.bytes_read = 0

    def assignment(self, epoch: int, rank: int | None = None) -> list[int]:
        return shard_assignment(len(self.shards), self.world, self.rank if rank is None else rank, self.seed,
                                epoch, self.shuffle)

    def steps_per_epoch(self, epoch: int) -> int:
        """The same for every rank: the smallest rank's share of records, in whole batches."""
        shares = [sum(self.shards[i].records for i in self.assignment(epoch, r)) for r in range(self.world)]
        smallest = min(shares)
        return smallest // self.batch_size if self.drop_last else -(-smallest // self.batch_size)

    def _fetch(self, idx: int, epoch: int) -> dict[str, np.ndarray]:
        shard = self.shards[idx]
        if self.blobs is not None:
            payload = self.blobs[shard.name]
        else:
            from google.api_core import exceptions as gexc

            uri = GcsUri.parse(self.manifest.uri).join(shard.name)
            b = gcs.blob(uri, generation=shard.generation)
            try:
                payload = gcs.with_retries(b.download_as_bytes, f"read {uri}")
            except gexc.NotFound:
                raise TrainerError(f"shard {uri} (generation {shard.generation}) named by the manifest is gone: "
                                   "the data set changed under the run; re-run against its new version") from None
            if shard.crc32c and f"{zlib.crc32(payload):08x}" != shard.crc32c:
                raise TrainerError(f"shard {uri} does not match the manifest's checksum")
        self.bytes_read += len(payload)
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, idx]).permutation(len(arrays["id"]))
            arrays = {k: v[perm] for k, v in arrays.items()}
        return arrays

    def _stream(self, indices: list[int], epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Shards in order, each downloaded while the one before is consumed."""
        if self.prefetch <= 0 or len(indices) <= 1:
            for i in indices:
                yield self._fetch(i, epoch)
            return
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for i in indices:
                    item = self._fetch(i, epoch)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
                q.put(exc)

        t = threading.Thread(target=work, name=f"shards-{self.split}", daemon=True)
        t.start()
        try:
            while True:
                item = q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """This rank's batches for ``epoch``, from batch ``start_step`` on (resume)."""
        steps = self.steps_per_epoch(epoch)
        indices = self.assignment(epoch)
        skip = start_step * self.batch_size
        first = 0
        while first < len(indices) and skip >= self.shards[indices[first]].records:
            skip -= self.shards[indices[first]].records
            first += 1
        step = start_step
        pending: list[dict[str, np.ndarray]] = []
        have = 0
        for arrays in self._stream(indices[first:], epoch):
            if skip:
                arrays = {k: v[skip:] for k, v in arrays.items()}
                skip = 0
            pending.append(arrays)
            have += len(arrays["id"])
            while have >= self.batch_size and step < steps:
                batch, pending, have = _take(pending, self.batch_size)
                yield batch
                step += 1
            if step >= steps:
                return
        if have and step < steps and not self.drop_last:
            batch, pending, have = _take(pending, have)
            yield batch


def _take(pending: list[dict[str, np.ndarray]], n: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
    if len(pending[0]["id"]) >= n:
        head = pending[0]
        batch = {k: v[:n] for k, v in head.items()}
        rest = {k: v[n:] for k, v in head.items()}
        pending = ([rest] if len(rest["id"]) else []) + pending[1:]
    else:
        merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        batch = {k: v[:n] for k, v in merged.items()}
        rest = {k: v[n:] for k, v in merged.items()}
        pending = [rest] if len(rest["id"]) else []
    return batch, pending, sum(len(p["id"]) for p in pending)


# ---------------------------------------------------------------------------------------------
# CLI: python -m trainer.data write gs://bucket/prefix [--source synthetic|digits|module:function]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="generate a data set and write it as shards + manifest")
    w.add_argument("uri", help="gs://bucket/prefix")
    w.add_argument("--source", default="synthetic", help="synthetic, digits or module:function (default synthetic)")
    w.add_argument("--shards", type=int, default=8)
    w.add_argument("--val-shards", type=int, default=2)
    w.add_argument("--val-fraction", type=float, default=0.2)
    w.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("show", help="print a data set's manifest")
    s.add_argument("uri")
    args = p.parse_args(argv)
    try:
        if args.cmd == "write":
            arrays, classes = source(args.source)(seed=args.seed)
            m = write_dataset(args.uri, arrays, classes, args.shards, args.val_shards, args.val_fraction,
                              {"source": args.source, "seed": args.seed})
            print(json.dumps({"uri": m.uri, "manifest_generation": m.generation,
                              "records": {k: sum(s.records for s in v) for k, v in m.splits.items()}}))
        else:
            m = read_manifest(args.uri)
            print(json.dumps({"uri": m.uri, "manifest_generation": m.generation, "features": m.features,
                              "num_classes": m.num_classes,
                              "splits": {k: [s.__dict__ for s in v] for k, v in m.splits.items()}}, indent=1))
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
