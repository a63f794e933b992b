"""Sharded, asynchronous checkpoints in GCS with torch.distributed.checkpoint (DCP), exact resume.

Layout under ``CHECKPOINT_URI``::

    step-000000000200/.metadata          # DCP's index (written by rank 0)
    step-000000000200/__<rank>_0.distcp  # each rank's part of the tensors (DCP dedups replicas,
                                         # so with DDP each rank writes ~1/W of the state)
    step-000000000200/meta.json          # step, world size, arguments, data lineage, position, …
    step-000000000200/rank-<r>.pt        # rank r's RNG streams and running sums; written LAST by rank r

A checkpoint is **complete** when ``meta.json`` and ``rank-<r>.pt`` for every rank of its world
size exist: each rank uploads its DCP files before its ``rank-<r>.pt``, rank 0 uploads
``.metadata`` and ``meta.json`` before its own. Incomplete steps are never loaded.

Saving (:meth:`CheckpointManager.save`): ``dcp.async_save`` copies this rank's shard of the state
to host memory (about 1x the local shard: the only copy), returns, and writes it to a local staging
directory in a background thread on a gloo group of its own; the same thread then uploads this
rank's files to GCS (``ifGenerationMatch=0``: an existing checkpoint is never replaced) and
deletes them locally. Training continues meanwhile; the next save (or :meth:`wait`) waits for it.

Loading (:meth:`CheckpointManager.load`): every rank downloads ``.metadata`` and only the files
that hold the tensors its own state dict needs, and DCP copies them into the existing tensors (no
second copy on the host). A checkpoint records the arguments, world size and data lineage;
:func:`check_resume` refuses a resume whose arguments or data differ unless allowed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch.distributed.checkpoint.filesystem import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.state_dict_loader import load as dcp_load
from torch.distributed.checkpoint.state_dict_saver import async_save as dcp_async_save
from torch.distributed.checkpoint.state_dict_saver import save as dcp_save

from trainer import gcs
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer")

STEP_DIR = re.compile(r"^step-(\d{12})/$")
META = "meta.json"
UPLOAD_TIMEOUT = 600.0  # seconds per request of an upload


def rng_state() -> dict[str, Any]:
    """This process's RNG streams (python, numpy, torch, CUDA) in a form torch.load(weights_only=True) reads."""
    import random

    import numpy as np

    npst: Any = np.random.get_state()
    py = random.getstate()
    st: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
        "torch": torch.get_rng_state(),
    }
    # torch.cuda.is_initialized has no annotations in torch's stubs
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import random

    import numpy as np

    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def step_dir(step: int) -> str:
    return f"step-{step:012d}"


# Arguments that may change between a checkpoint and its resume without changing the run.
RUNTIME_ARGS = frozenset(
    {
        "checkpoint_every",
        "keep_checkpoints",
        "stop_check_every",
        "log_every",
        "model_version",
        "job_name",
        "data_uri",
        "output_uri",
        "checkpoint_uri",
        "workers",
        "allow_resume_changes",
        "async_checkpoint",
        "compile",
        "device",
        "backend",
        "max_steps",
    }
)


def check_resume(
    saved: Mapping[str, Any],
    args: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    saved_data: Mapping[str, Any] | None,
    allow: bool,
) -> list[str]:
    """What differs between a checkpoint and this run; raises TrainerError (exit 2) unless ``allow``."""
    diffs = []
    for key in sorted(set(saved) | set(args)):
        if key in RUNTIME_ARGS:
            continue
        if saved.get(key) != args.get(key):
            diffs.append(f"{key}: checkpoint {saved.get(key)!r}, now {args.get(key)!r}")
    if data is not None and saved_data is not None and dict(data) != dict(saved_data):
        diffs.append(
            f"data: checkpoint manifest generation {saved_data.get('manifest_generation')}, "
            f"now {data.get('manifest_generation')} ({data.get('uri')})"
        )
    if diffs and not allow:
        raise TrainerError(
            "the checkpoint was written by a different run: "
            + "; ".join(diffs)
            + ". Use a new CHECKPOINT_URI (or job name), or pass --allow-resume-changes to resume anyway"
        )
    return diffs


class _GcsReader(FileSystemReader):
    """DCP reader that downloads, per rank, only the files its read plan touches."""

    def __init__(self, local: str, remote: GcsUri) -> None:
        Path(local).mkdir(parents=True, exist_ok=True)
        super().__init__(local)
        self.local, self.remote = Path(local), remote
        self.downloaded = 0

    def _get(self, name: str) -> None:
        dest = self.local / name
        if dest.exists():
            return
        blob = gcs.blob(self.remote.join(name))
        tmp = dest.with_name(dest.name + f".part{os.getpid()}")
        gcs.call(blob.download_to_filename, str(tmp), what=f"read {self.remote.join(name)}")
        tmp.rename(dest)
        self.downloaded += dest.stat().st_size

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        self._get(".metadata")
        return super().read_metadata(*args, **kwargs)

    def read_data(self, plan: Any, planner: Any) -> Any:
        for name in sorted({self.storage_data[item.storage_index].relative_path for item in plan.items}):
            self._get(name)
        return super().read_data(plan, planner)


@dataclass
class Pending:
    step: int
    thread: threading.Thread
    started: float
    error: BaseException | None = None
    seconds: float = 0.0


class CheckpointManager:
    """Sharded async checkpoints of one run. Collective: call save/load on every rank at the same step."""

    def __init__(
        self, uri: str, rank: int, world_size: int, keep: int = 3, async_save: bool = True, staging: str | None = None
    ) -> None:
        self.base = GcsUri.parse(uri, "CHECKPOINT_URI")
        self.rank, self.world, self.keep, self.async_save = rank, world_size, keep, async_save
        self._staging = Path(staging) if staging else None
        self.pending: Pending | None = None
        self.last_seconds = 0.0  # wall time of the last completed save (blocking part + background)
        self.last_blocking = 0.0
        self.pg: Any = None
        if tdist.is_available() and tdist.is_initialized():
            # DCP's collectives for async saves run on CPU tensors, in another thread: a gloo group
            # of their own keeps them apart from training collectives (and works with nccl training).
            self.pg = tdist.new_group(backend="gloo")

    @property
    def staging(self) -> Path:
        """Local directory for DCP's files on their way to/from GCS (created on first use)."""
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="trainer-ckpt-"))
        return self._staging

    # -- listing ---------------------------------------------------------------------------

    def _names(self, prefix: str, delimiter: str | None = None) -> list[str]:
        client = gcs.client()

        def ls() -> list[str]:
            it = client.list_blobs(self.base.bucket, prefix=prefix, delimiter=delimiter, retry=None)
            names = [b.name for b in it]
            return names + sorted(it.prefixes) if delimiter else names

        return gcs.with_retries(ls, f"list gs://{self.base.bucket}/{prefix}")

    def _prefix(self) -> str:
        return self.base.path + "/" if self.base.path else ""

    def steps(self) -> list[int]:
        """Steps that have a directory, newest first (complete or not)."""
        pre = self._prefix()
        out = []
        for name in self._names(pre, "/"):
            m = STEP_DIR.match(name[len(pre) :])
            if m:
                out.append(int(m.group(1)))
        return sorted(out, reverse=True)

    def meta(self, step: int) -> dict[str, Any] | None:
        """meta.json of ``step`` when that checkpoint is complete, else None."""
        pre = self._prefix() + step_dir(step) + "/"
        names = {n[len(pre) :] for n in self._names(pre)}
        if META not in names or ".metadata" not in names:
            return None
        raw = gcs.call(gcs.blob(self.base.join(step_dir(step), META)).download_as_bytes, what="read meta.json")
        doc: dict[str, Any] = json.loads(raw)
        if not all(f"rank-{r}.pt" in names for r in range(int(doc["world_size"]))):
            return None
        return doc

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest complete checkpoint (decided on rank 0 and broadcast by the caller)."""
        for step in self.steps():
            doc = self.meta(step)
            if doc is not None:
                return step, doc
            log.warning(
                "skipping checkpoint %s: incomplete (a rank had not finished uploading)", self.base.join(step_dir(step))
            )
        return None

    # -- saving ----------------------------------------------------------------------------

    def wait(self) -> None:
        """Wait for the save in flight; raises its error."""
        p, self.pending = self.pending, None
        if p is None:
            return
        p.thread.join()
        if p.error is not None:
            raise p.error
        self.last_seconds = p.seconds

    def save(
        self, step: int, state: dict[str, Any], meta: dict[str, Any], rank_state: dict[str, Any], block: bool = False
    ) -> float:
        """Start saving ``state`` (DCP state dict) as checkpoint ``step``; returns the blocking seconds.

        ``meta`` (JSON) is written by rank 0, ``rank_state`` (torch.save) by every rank."""
        self.wait()
        t0 = time.perf_counter()
        local = self.staging / step_dir(step)
        if local.exists():
            shutil.rmtree(local)
        writer = FileSystemWriter(str(local), single_file_per_rank=True, sync_files=False)
        meta = {**meta, "step": step, "world_size": self.world, "format": "trainer.dcp/v1"}
        rbuf = io.BytesIO()
        torch.save(rank_state, rbuf)
        rank_bytes = rbuf.getvalue()
        if self.async_save:
            fut: Any = dcp_async_save(state, storage_writer=writer, process_group=self.pg)
        else:
            dcp_save(state, storage_writer=writer, process_group=self.pg)
            fut = None
        self.last_blocking = time.perf_counter() - t0
        pending = Pending(step, threading.Thread(), t0)

        def finish() -> None:
            try:
                if fut is not None:
                    fut.result()
                self._upload(step, local, meta, rank_bytes)
                pending.seconds = time.perf_counter() - t0
            except BaseException as exc:
                pending.error = exc
            finally:
                shutil.rmtree(local, ignore_errors=True)

        pending.thread = threading.Thread(target=finish, name=f"ckpt-{step}", daemon=True)
        pending.thread.start()
        self.pending = pending
        if block:
            self.wait()
        return self.last_blocking

    def _put(self, name: str, path: Path | None = None, data: bytes | None = None, step: int = 0) -> None:
        from google.api_core import exceptions as gexc

        dest = self.base.join(step_dir(step), name)

        def upload() -> None:
            blob = gcs.blob(dest)
            blob.chunk_size = 64 * 1024 * 1024  # resumable upload in 64 MiB chunks (no whole-file copy in memory)
            try:
                # A 64 MiB chunk on a busy node can take longer than the client's default 60 s.
                if path is not None:
                    blob.upload_from_filename(str(path), if_generation_match=0, timeout=UPLOAD_TIMEOUT, retry=None)
                else:
                    blob.upload_from_string(data or b"", if_generation_match=0, timeout=UPLOAD_TIMEOUT, retry=None)
            except gexc.NotFound as exc:
                # A resumable session the server no longer knows (expired, or lost under load):
                # start the whole upload again in a new session.
                raise ConnectionError(f"resumable upload session lost: {exc}") from exc

        try:
            gcs.with_retries(upload, f"upload {dest}")
        except gexc.PreconditionFailed:
            log.info("%s exists already; keeping it", dest)

    def _upload(self, step: int, local: Path, meta: dict[str, Any], rank_bytes: bytes) -> None:
        mine = sorted(local.glob(f"__{self.rank}_*"))
        for f in mine:
            self._put(f.name, path=f, step=step)
        if self.rank == 0:
            self._put(".metadata", path=local / ".metadata", step=step)
            self._put(META, data=json.dumps(meta, indent=1, sort_keys=True, default=str).encode(), step=step)
        self._put(f"rank-{self.rank}.pt", data=rank_bytes, step=step)

    def prune(self) -> None:
        """Rank 0: delete all but the newest ``keep`` complete checkpoints (and incomplete older ones)."""
        if self.rank != 0:
            return
        complete = 0
        for step in self.steps():
            if complete >= self.keep or (complete and self.meta(step) is None):
                for name in self._names(self._prefix() + step_dir(step) + "/"):
                    with contextlib.suppress(Exception):
                        gcs.call(gcs.client().bucket(self.base.bucket).blob(name).delete, what=f"delete {name}")
            elif self.meta(step) is not None:
                complete += 1

    # -- loading ---------------------------------------------------------------------------

    def load(self, step: int, state: dict[str, Any], same_world: bool) -> tuple[dict[str, Any] | None, int]:
        """Load checkpoint ``step`` into ``state`` in place (DCP); returns this rank's rank_state
        (None when the world size changed) and the bytes this rank downloaded."""
        local = self.staging / ("load-" + step_dir(step))
        reader = _GcsReader(str(local), self.base.join(step_dir(step)))
        try:
            dcp_load(state, storage_reader=reader, process_group=self.pg)
            rank_state = None
            if same_world:
                raw = gcs.call(
                    gcs.blob(self.base.join(step_dir(step), f"rank-{self.rank}.pt")).download_as_bytes,
                    what="read rank state",
                )
                rank_state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            return rank_state, reader.downloaded
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def close(self) -> None:
        self.wait()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)


def save_training(
    mgr: CheckpointManager,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    rank_extra: dict[str, Any] | None = None,
    block: bool = False,
) -> float:
    """Save model + optimizer (sharding-aware state dicts), ``meta`` (JSON: position, arguments,
    data lineage…) and this rank's RNG streams. Returns the seconds training was blocked."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return mgr.save(
        step, {"model": model_sd, "optim": optim_sd}, meta, {"rng": rng_state(), **(rank_extra or {})}, block=block
    )


def restore_training(
    mgr: CheckpointManager,
    broadcast: Any,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    args: Mapping[str, Any],
    data: Mapping[str, Any] | None,
    allow_changes: bool = False,
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """Load the newest complete checkpoint into ``model``/``optimizer`` (each rank reads only its
    part) and restore this rank's RNG streams when the world size is unchanged. ``broadcast`` is
    ``ctx.broadcast`` (rank 0 picks the checkpoint). Returns (meta, rank_extra) or None when there
    is none. Refuses (TrainerError, exit 2) a checkpoint whose ``meta["args"]``/``meta["data"]``
    differ from ``args``/``data`` unless ``allow_changes``."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    found = mgr.latest() if mgr.rank == 0 else None
    step, meta = broadcast((found[0], found[1]) if found else (-1, None))
    if step < 0:
        return None
    check_resume(meta.get("args", {}), args, data, meta.get("data"), allow_changes)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_sd, "optim": optim_sd}
    rank_state, _ = mgr.load(step, state, int(meta["world_size"]) == mgr.world)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if rank_state is not None:
        set_rng_state(rank_state.pop("rng"))
    return meta, rank_state
