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
from typing import Any, cast

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
        if "x" not in self.features:
            return 0  # not a flat-feature data set (e.g. image tar shards)
        shape = self.features["x"]["shape"]
        return int(np.prod(shape)) if shape else 1

    def lineage(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "manifest_generation": self.generation,
            "shards": {s.name: s.generation for split in self.splits.values() for s in split},
        }


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
    return cast(Callable[..., Any], fn)


def source(name: str) -> Callable[..., tuple[dict[str, np.ndarray], int]]:
    return SOURCES[name] if name in SOURCES else load_hook(name, "data source")


# ---------------------------------------------------------------------------------------------
# Writing


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    cast(Any, np.savez)(buf, **arrays)
    return buf.getvalue()


def _features(arrays: dict[str, np.ndarray]) -> dict[str, Any]:
    return {k: {"dtype": str(v.dtype), "shape": list(v.shape[1:])} for k, v in arrays.items()}


def split_arrays(arrays: dict[str, np.ndarray], val_fraction: float) -> dict[str, dict[str, np.ndarray]]:
    n = len(next(iter(arrays.values())))
    if any(len(v) != n for v in arrays.values()):
        raise TrainerError("all arrays of a data set must have the same length")
    arrays = {"id": np.arange(n, dtype=np.int64), **arrays}
    n_val = round(n * val_fraction)
    out = {"train": {k: v[n_val:] for k, v in arrays.items()}}
    if n_val:
        out["val"] = {k: v[:n_val] for k, v in arrays.items()}
    return out


def _upload_shards(
    base: GcsUri,
    sizes: dict[str, int],
    shards: int,
    val_shards: int,
    ext: str,
    content_type: str,
    payload: Callable[[str, int, int], bytes],
) -> dict[str, list[Shard]]:
    """Cut each split's ``sizes[split]`` records into ``shards`` (train) or ``val_shards`` near-equal
    shards and upload ``payload(split, start, stop)`` as each; every :class:`Shard` names the
    generation written, its size and CRC-32."""
    splits: dict[str, list[Shard]] = {}
    for split, n in sizes.items():
        n_shards = shards if split == "train" else val_shards
        if n < n_shards:
            raise TrainerError(f"{split}: {n} records cannot fill {n_shards} shards")
        bounds = np.linspace(0, n, n_shards + 1).astype(int)
        splits[split] = []
        for i in range(n_shards):
            name = f"{split}-{i:05d}-of-{n_shards:05d}.{ext}"
            data = payload(split, int(bounds[i]), int(bounds[i + 1]))
            b = gcs.blob(base.join(name))
            gcs.call(b.upload_from_string, data, content_type=content_type, what=f"upload {base.join(name)}")
            splits[split].append(
                Shard(name, int(bounds[i + 1] - bounds[i]), b.generation, len(data), f"{zlib.crc32(data):08x}")
            )
    return splits


def _upload_manifest(
    base: GcsUri,
    features: dict[str, Any],
    num_classes: int,
    splits: dict[str, list[Shard]],
    meta: dict[str, Any] | None,
) -> Manifest:
    """Write manifest.json, naming the generation of every shard in ``splits`` (so upload it last)."""
    doc: dict[str, Any] = {
        "format": FORMAT,
        "features": features,
        "num_classes": int(num_classes),
        "splits": {k: [s.__dict__ for s in v] for k, v in splits.items()},
        "meta": {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **(meta or {})},
    }
    mb = gcs.blob(base.join(MANIFEST))
    gcs.call(
        mb.upload_from_string,
        json.dumps(doc, indent=1),
        content_type="application/json",
        what=f"upload {base.join(MANIFEST)}",
    )
    return Manifest(str(base), mb.generation, features, int(num_classes), splits, doc["meta"])


def write_dataset(
    uri: str,
    arrays: dict[str, np.ndarray],
    num_classes: int,
    shards: int = 8,
    val_shards: int = 2,
    val_fraction: float = 0.2,
    meta: dict[str, Any] | None = None,
) -> Manifest:
    """Write shards, then the manifest naming their generations. Returns the manifest."""
    base = GcsUri.parse(uri, "data URI")
    parts = split_arrays(arrays, val_fraction)
    splits = _upload_shards(
        base,
        {split: len(data["id"]) for split, data in parts.items()},
        shards,
        val_shards,
        "npz",
        "application/octet-stream",
        lambda split, start, stop: _npz_bytes({k: v[start:stop] for k, v in parts[split].items()}),
    )
    return _upload_manifest(base, _features(parts["train"]), num_classes, splits, meta)


def tar_shard(records: list[dict[str, bytes | int]], first_id: int) -> bytes:
    """A webdataset-style tar: for record i, members ``<key>.<field>`` plus ``<key>.id``."""
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i, rec in enumerate(records):
            key = f"{first_id + i:09d}"
            for field, value in {"id": first_id + i, **rec}.items():
                raw = str(value).encode() if isinstance(value, int) else value
                info = tarfile.TarInfo(f"{key}.{field}")
                info.size, info.mtime, info.mode = len(raw), 0, 0o644
                tf.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def write_tar_dataset(
    uri: str,
    records: list[dict[str, bytes | int]],
    num_classes: int,
    shards: int = 8,
    val_shards: int = 2,
    val_fraction: float = 0.2,
    meta: dict[str, Any] | None = None,
) -> Manifest:
    """Write records (e.g. ``{"png": <bytes>, "cls": 3}``) as webdataset-style tar shards + manifest."""
    base = GcsUri.parse(uri, "data URI")
    n_val = round(len(records) * val_fraction)
    parts = {"train": (n_val, records[n_val:])}
    if n_val:
        parts["val"] = (0, records[:n_val])
    splits = _upload_shards(
        base,
        {split: len(recs) for split, (_, recs) in parts.items()},
        shards,
        val_shards,
        "tar",
        "application/x-tar",
        lambda split, start, stop: tar_shard(parts[split][1][start:stop], parts[split][0] + start),
    )
    first = records[0]
    features = {
        "id": {"dtype": "int64", "shape": []},
        **{k: {"dtype": "int64" if isinstance(v, int) else "bytes", "shape": []} for k, v in first.items()},
    }
    return _upload_manifest(base, features, num_classes, splits, meta)


def in_memory(
    arrays: dict[str, np.ndarray], num_classes: int, shards: int = 8, val_shards: int = 2, val_fraction: float = 0.2
) -> tuple[Manifest, dict[str, bytes]]:
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
            blobs[name] = _npz_bytes({k: v[bounds[i] : bounds[i + 1]] for k, v in data.items()})
            splits[split].append(Shard(name, int(bounds[i + 1] - bounds[i])))
    return Manifest("memory://", None, _features(parts["train"]), num_classes, splits, {}), blobs


# ---------------------------------------------------------------------------------------------
# Reading


def read_manifest(uri: str) -> Manifest:
    base = GcsUri.parse(uri, "DATA_URI")
    from google.api_core import exceptions as gexc

    mb = gcs.blob(base.join(MANIFEST))
    try:
        raw = gcs.call(mb.download_as_bytes, what=f"read {base.join(MANIFEST)}")
    except gexc.NotFound:
        raise TrainerError(
            f"no data set at {base}: {base.join(MANIFEST)} does not exist "
            "(write one with `python -m trainer.data write URI`)"
        ) from None
    except gexc.Forbidden as exc:
        raise TrainerError(f"cannot read {base.join(MANIFEST)}: permission denied ({exc.message})") from None
    where = f"bad manifest {base.join(MANIFEST)}"
    try:
        doc = json.loads(raw)
        fmt = doc.get("format")
    except (ValueError, AttributeError) as exc:
        raise TrainerError(f"{where}: {exc}") from None
    if fmt != FORMAT:
        raise TrainerError(f"{where}: format is {fmt!r}, expected {FORMAT!r}")
    try:
        splits = {k: [Shard(**s) for s in v] for k, v in doc["splits"].items()}
        features, classes, meta = doc["features"], int(doc["num_classes"]), doc.get("meta", {})
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrainerError(f"{where}: {exc}") from None
    if not splits.get("train"):
        raise TrainerError(f"{where}: no train shards")
    return Manifest(str(base), mb.generation, features, classes, splits, meta)


@dataclass(frozen=True)
class Segment:
    """Records ``[start, end)`` of shard ``shard`` (positions in the shard's shuffled order)."""

    shard: int
    start: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.start


def units(shards: list[Shard], world: int) -> list[Segment]:
    """The units dealt to ranks: whole shards, or equal parts of each when there are fewer shards
    than ranks (so no rank reads another's records)."""
    k = max(1, -(-world // max(1, len(shards))))
    out = []
    for i, s in enumerate(shards):
        bounds = np.linspace(0, s.records, k + 1).astype(int)
        out += [Segment(i, int(bounds[j]), int(bounds[j + 1])) for j in range(k) if bounds[j + 1] > bounds[j]]
    return out


def _drop_front(segs: list[Segment], n: int) -> list[Segment]:
    out = []
    for seg in segs:
        if n >= seg.records:
            n -= seg.records
            continue
        out.append(Segment(seg.shard, seg.start + n, seg.end))
        n = 0
    return out


def _cut(segs: list[Segment], world: int) -> list[list[Segment]]:
    """Contiguous, near-equal, disjoint pieces of a segment list, one per rank."""
    total = sum(s.records for s in segs)
    bounds = np.linspace(0, total, world + 1).astype(int)
    out: list[list[Segment]] = []
    for r in range(world):
        lo, hi, pos, mine = int(bounds[r]), int(bounds[r + 1]), 0, []
        for s in segs:
            a, b = max(lo, pos), min(hi, pos + s.records)
            if a < b:
                mine.append(Segment(s.shard, s.start + a - pos, s.start + b - pos))
            pos += s.records
        out.append(mine)
    return out


def epoch_plan(
    shards: list[Shard], history: list[tuple[int, int]], batch_size: int, seed: int, epoch: int, shuffle: bool = True
) -> list[list[Segment]]:
    """Every rank's segments for the rest of ``epoch``.

    ``history`` = ``[(0, W0), (k1, W1), …]``: the epoch started with W0 ranks, and from step k1 of
    the epoch on ran with W1 ranks (an elastic resize), …. At the start, units are permuted by
    ``(seed, epoch)`` and dealt DistributedSampler-style, ``order[r::W0]`` (no padding: disjoint).
    At each resize, what every old rank had not consumed yet is concatenated in rank order and cut
    into W_i contiguous pieces, so no record of the epoch is read twice or skipped by the resize."""
    if not history or history[0][0] != 0:
        raise ValueError(f"history must start with (0, world), got {history!r}")
    w0 = history[0][1]
    u = units(shards, w0)
    order = np.random.default_rng([seed, epoch]).permutation(len(u)).tolist() if shuffle else list(range(len(u)))
    lists = [[u[i] for i in order[r::w0]] for r in range(w0)]
    prev = 0
    for step, world in history[1:]:
        consumed = (step - prev) * batch_size
        rest = [seg for lst in lists for seg in _drop_front(lst, consumed)]
        lists = _cut(rest, world)
        prev = step
    return lists


def shard_assignment(n_shards: int, world: int, rank: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The shards rank ``rank`` reads in ``epoch`` (whole or in part), in reading order."""
    fake = [Shard(f"s{i}", world) for i in range(n_shards)]
    seen: list[int] = []
    for seg in epoch_plan(fake, [(0, world)], 1, seed, epoch, shuffle)[rank]:
        if not seen or seen[-1] != seg.shard:
            seen.append(seg.shard)
    return seen


# Shard codecs: a shard is read into columns (numpy arrays sharing dim 0; object arrays of bytes
# for tar members), so shuffling, slicing and batching are the same for every format.


def _read_npz(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_tar(payload: bytes) -> dict[str, np.ndarray]:
    """A webdataset-style tar: members ``<key>.<field>`` grouped by key in archive order.

    ``cls``/``id`` fields (ASCII integers) become int64 columns; every other field stays bytes
    (decoded later, in the DataLoader workers, by the batch hook)."""
    import tarfile

    rows: dict[str, dict[str, bytes]] = {}
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:") as tf:
        for member in tf:
            if not member.isfile():
                continue
            key, dot, field = member.name.rpartition("/")[2].partition(".")
            if not dot:
                continue
            f = tf.extractfile(member)
            if f is None:
                continue
            rows.setdefault(key, {})[field] = f.read()
    if not rows:
        raise TrainerError("tar shard has no <key>.<field> members")
    fields = sorted({f for r in rows.values() for f in r})
    out: dict[str, np.ndarray] = {}
    for field in fields:
        values = [r.get(field) for r in rows.values()]
        if any(v is None for v in values):
            raise TrainerError(f"tar shard: field {field!r} is missing from some records")
        if field in ("cls", "id"):
            out[field] = np.array([int(v) for v in values if v is not None], dtype=np.int64)
        else:
            col = np.empty(len(values), dtype=object)
            col[:] = values
            out[field] = col
    if "id" not in out:
        raise TrainerError("tar shard: every record needs an <key>.id member (its record number)")
    return out


CODECS: dict[str, Callable[[bytes], dict[str, np.ndarray]]] = {".npz": _read_npz, ".tar": _read_tar}


def decode_shard(name: str, payload: bytes) -> dict[str, np.ndarray]:
    for suffix, fn in CODECS.items():
        if name.endswith(suffix):
            return fn(payload)
    raise TrainerError(f"shard {name}: unknown format (expected {', '.join(CODECS)})")


class ShardReader:
    """Batches of one rank's part of one split, streamed from GCS (or memory).

    ``history`` is the epoch's world-size history (see :func:`epoch_plan`); by default the world
    never changed. ``cache_dir``: shards are downloaded once into this directory (file-locked), so
    several DataLoader workers of one process share one download."""

    def __init__(
        self,
        manifest: Manifest,
        split: str,
        rank: int,
        world: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        blobs: dict[str, bytes] | None = None,
        prefetch: int = 1,
        drop_last: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if split not in manifest.splits:
            raise TrainerError(f"data set {manifest.uri} has no {split!r} split")
        self.manifest, self.split, self.rank, self.world = manifest, split, rank, world
        self.batch_size, self.seed, self.shuffle, self.blobs = batch_size, seed, shuffle, blobs
        self.prefetch, self.drop_last, self.cache_dir = prefetch, drop_last, cache_dir
        self.shards = manifest.splits[split]
        self.bytes_read = 0
        self.histories: dict[int, list[tuple[int, int]]] = {}

    def history(self, epoch: int) -> list[tuple[int, int]]:
        return self.histories.get(epoch, [(0, self.world)])

    def plan(self, epoch: int) -> list[list[Segment]]:
        return epoch_plan(self.shards, self.history(epoch), self.batch_size, self.seed, epoch, self.shuffle)

    def assignment(self, epoch: int, rank: int | None = None) -> list[int]:
        seen: list[int] = []
        for seg in self.plan(epoch)[self.rank if rank is None else rank]:
            if not seen or seen[-1] != seg.shard:
                seen.append(seg.shard)
        return seen

    def steps_per_epoch(self, epoch: int) -> int:
        """The same for every rank: the smallest rank's share of records, in whole batches."""
        start = self.history(epoch)[-1][0]
        smallest = min(sum(s.records for s in lst) for lst in self.plan(epoch))
        per = smallest // self.batch_size if self.drop_last else -(-smallest // self.batch_size)
        return start + per

    def _payload(self, shard: Shard) -> bytes:
        if self.blobs is not None:
            return self.blobs[shard.name]
        if self.cache_dir is None:
            return self._download(shard)
        import fcntl
        from pathlib import Path

        path = Path(self.cache_dir) / f"{shard.name}.{shard.generation}"
        with open(f"{path}.lock", "w") as lock:  # noqa: PTH123 - a lock file handle
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.exists():
                tmp = path.with_suffix(path.suffix + f".tmp{threading.get_ident()}")
                tmp.write_bytes(self._download(shard))
                tmp.rename(path)
        return path.read_bytes()

    def _download(self, shard: Shard) -> bytes:
        from google.api_core import exceptions as gexc

        uri = GcsUri.parse(self.manifest.uri).join(shard.name)
        b = gcs.blob(uri, generation=shard.generation)
        try:
            payload: bytes = gcs.call(b.download_as_bytes, what=f"read {uri}")
        except gexc.NotFound:
            raise TrainerError(
                f"shard {uri} (generation {shard.generation}) named by the manifest is gone: "
                "the data set changed under the run; re-run against its new version"
            ) from None
        if shard.crc32c and f"{zlib.crc32(payload):08x}" != shard.crc32c:
            raise TrainerError(f"shard {uri} does not match the manifest's checksum")
        return payload

    def _fetch(self, idx: int, epoch: int) -> dict[str, np.ndarray]:
        shard = self.shards[idx]
        payload = self._payload(shard)
        self.bytes_read += len(payload)
        arrays = decode_shard(shard.name, payload)
        n = len(arrays["id"])
        if n != shard.records:
            raise TrainerError(f"shard {shard.name} has {n} records, the manifest says {shard.records}")
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch, idx]).permutation(n)
            arrays = {k: v[perm] for k, v in arrays.items()}
        return arrays

    def _stream(self, segs: list[Segment], epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Segments in order, each shard downloaded while the one before is consumed."""
        cache: dict[int, dict[str, np.ndarray]] = {}

        def get(seg: Segment) -> dict[str, np.ndarray]:
            if seg.shard not in cache:
                cache.clear()
                cache[seg.shard] = self._fetch(seg.shard, epoch)
            return {k: v[seg.start : seg.end] for k, v in cache[seg.shard].items()}

        if self.prefetch <= 0 or len(segs) <= 1:
            for seg in segs:
                yield get(seg)
            return
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def work() -> None:
            try:
                for seg in segs:
                    item = get(seg)
                    while not stop.is_set():
                        try:
                            q.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                q.put(None)
            except BaseException as exc:
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

    def epoch(
        self, epoch: int, start_step: int = 0, only: Callable[[int], bool] | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """This rank's batches for ``epoch``, from batch ``start_step`` on (resume).

        ``only(step)``: yield only those batches (DataLoader workers split the batches of one rank);
        a skipped batch is sliced, never decoded."""
        steps = self.steps_per_epoch(epoch)
        base = self.history(epoch)[-1][0]
        if start_step < base:
            raise ValueError(f"start step {start_step} is before the last resize at step {base}")
        segs = _drop_front(self.plan(epoch)[self.rank], (start_step - base) * self.batch_size)
        step = start_step
        pending: list[dict[str, np.ndarray]] = []
        have = 0
        for arrays in self._stream(segs, epoch):
            pending.append(arrays)
            have += len(arrays["id"])
            while have >= self.batch_size and step < steps:
                batch, pending, have = _take(pending, self.batch_size)
                if only is None or only(step):
                    yield batch
                step += 1
            if step >= steps:
                return
        if have and step < steps and not self.drop_last:
            batch, pending, have = _take(pending, have)
            if only is None or only(step):
                yield batch


def _take(
    pending: list[dict[str, np.ndarray]], n: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
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
            m = write_dataset(
                args.uri,
                arrays,
                classes,
                args.shards,
                args.val_shards,
                args.val_fraction,
                {"source": args.source, "seed": args.seed},
            )
            print(
                json.dumps(
                    {
                        "uri": m.uri,
                        "manifest_generation": m.generation,
                        "records": {k: sum(s.records for s in v) for k, v in m.splits.items()},
                    }
                )
            )
        else:
            m = read_manifest(args.uri)
            print(
                json.dumps(
                    {
                        "uri": m.uri,
                        "manifest_generation": m.generation,
                        "features": m.features,
                        "num_classes": m.num_classes,
                        "splits": {k: [s.__dict__ for s in v] for k, v in m.splits.items()},
                    },
                    indent=1,
                )
            )
    except TrainerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
