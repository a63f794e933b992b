"""Atomic checkpoints in GCS and resume from the latest complete one.

Layout under ``CHECKPOINT_URI``::

    ckpt-000000000200.pt      # one object per checkpoint, named by global step (zero-padded)
    _tmp/…                    # parts of a checkpoint being written; never read

Writing: the payload (``torch.save`` bytes followed by a 40-byte trailer: ``TRCKPT01`` and the
SHA-256 of the bytes before it) up to PART_SIZE is uploaded straight to its final name with
``ifGenerationMatch=0`` (a GCS object upload is atomic: the object exists only once complete).
A larger one is uploaded as temporary part objects in parallel, composed into the final name with
``ifGenerationMatch=0``, and the parts deleted. Either way the final name only ever appears
complete, and an existing checkpoint is never overwritten. Reading: candidates are tried newest first;
one whose trailer is missing or whose hash
does not match (truncated, corrupt, written by something else) is skipped with a warning.

torch is imported lazily, so listing and verifying work without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from trainer import gcs
from trainer.gcs import GcsUri

log = logging.getLogger("trainer")

MAGIC = b"TRCKPT01"
TRAILER = len(MAGIC) + 32
NAME = re.compile(r"^ckpt-(\d{12})\.pt$")
PART_SIZE = 64 * 1024 * 1024  # larger checkpoints are uploaded as parallel parts of at most this size
MAX_PARTS = 32  # GCS compose limit


class CorruptCheckpoint(Exception):
    pass


def seal(payload: bytes) -> bytes:
    return payload + MAGIC + hashlib.sha256(payload).digest()


def unseal(data: bytes) -> bytes:
    if len(data) < TRAILER or data[-TRAILER:-32] != MAGIC:
        raise CorruptCheckpoint("no checkpoint trailer (truncated or not written by the trainer)")
    payload, digest = data[:-TRAILER], data[-32:]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptCheckpoint("SHA-256 mismatch (corrupt)")
    return payload


def serialize(state: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(state, buf)
    return seal(buf.getvalue())


def deserialize(data: bytes) -> dict[str, Any]:
    import torch

    state: dict[str, Any] = torch.load(io.BytesIO(unseal(data)), map_location="cpu", weights_only=True)
    return state


@dataclass
class Saved:
    uri: str
    step: int
    size: int
    generation: int | None


class CheckpointStore:
    def __init__(self, uri: str, keep: int = 3) -> None:
        self.base = GcsUri.parse(uri, "CHECKPOINT_URI")
        self.keep = keep

    def name(self, step: int) -> str:
        return f"ckpt-{step:012d}.pt"

    def steps(self) -> list[int]:
        """Steps of the checkpoints present, newest first."""
        prefix = self.base.path + "/" if self.base.path else ""
        names = [b.name for b in gcs.list_blobs(self.base.bucket, f"list {self.base}", prefix=prefix, delimiter="/")]
        out = []
        for n in names:
            m = NAME.match(n[len(prefix) :])
            if m:
                out.append(int(m.group(1)))
        return sorted(out, reverse=True)

    def write(self, step: int, data: bytes) -> Saved:
        """Upload sealed bytes atomically: parts → compose(ifGenerationMatch=0) → delete parts."""
        from google.api_core import exceptions as gexc

        final = self.base.join(self.name(step))
        token = uuid.uuid4().hex[:12]
        n_parts = min(MAX_PARTS, max(1, -(-len(data) // PART_SIZE)))
        size = -(-len(data) // n_parts)
        chunks = [data[i * size : (i + 1) * size] for i in range(n_parts)]
        parts = [gcs.blob(self.base.join("_tmp", f"{self.name(step)}.{token}.{i:02d}")) for i in range(n_parts)]

        def up(i: int) -> None:
            gcs.call(
                parts[i].upload_from_string,
                chunks[i],
                content_type="application/octet-stream",
                if_generation_match=0,
                what=f"upload part {i} of {final}",
            )

        dest = gcs.blob(final)
        if n_parts == 1:
            # One object: a GCS upload is atomic (the object appears only once complete), and
            # ifGenerationMatch=0 refuses to replace an existing checkpoint.
            try:
                gcs.call(
                    dest.upload_from_string,
                    data,
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    what=f"upload {final}",
                )
            except gexc.PreconditionFailed:
                log.info("checkpoint %s exists already; keeping it", final)
                gcs.call(dest.reload, what=f"stat {final}")
            return Saved(str(final), step, len(data), dest.generation)
        if gcs.call(dest.exists, what=f"stat {final}"):
            # Complete by construction (only compose creates it). GCS would also refuse the compose
            # below (ifGenerationMatch=0); fake-gcs-server ignores preconditions on compose.
            log.info("checkpoint %s exists already; keeping it", final)
            gcs.call(dest.reload, what=f"stat {final}")
            return Saved(str(final), step, dest.size or 0, dest.generation)
        try:
            with ThreadPoolExecutor(min(8, n_parts)) as pool:
                list(pool.map(up, range(n_parts)))
            dest.content_type = "application/octet-stream"
            try:
                gcs.call(dest.compose, parts, if_generation_match=0, what=f"compose {final}")
            except gexc.PreconditionFailed:
                log.info("checkpoint %s exists already (complete by construction); keeping it", final)
                gcs.call(dest.reload, what=f"stat {final}")
            return Saved(str(final), step, len(data), dest.generation)
        finally:
            for p in parts:
                with contextlib.suppress(Exception):  # a leftover part is only garbage, never read
                    gcs.call(p.delete, what=f"delete {p.name}")

    def prune(self) -> None:
        for step in self.steps()[self.keep :]:
            try:
                gcs.call(gcs.blob(self.base.join(self.name(step))).delete, what=f"delete checkpoint {step}")
            except Exception as exc:
                log.warning("could not delete old checkpoint step %d: %s", step, exc)

    def read(self, step: int) -> bytes:
        data: bytes = gcs.call(
            gcs.blob(self.base.join(self.name(step))).download_as_bytes, what=f"read checkpoint {step}"
        )
        return data

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest checkpoint that verifies and loads; corrupt or partial ones are skipped with a warning."""
        for step in self.steps():
            uri = self.base.join(self.name(step))
            try:
                state = deserialize(self.read(step))
            except CorruptCheckpoint as exc:
                log.warning("skipping checkpoint %s: %s", uri, exc)
                continue
            except Exception as exc:
                log.warning("skipping checkpoint %s: cannot load it (%s: %s)", uri, type(exc).__name__, exc)
                continue
            if state.get("step") != step:
                log.warning("skipping checkpoint %s: it says step %s", uri, state.get("step"))
                continue
            return step, state
        return None
