"""A torch DataLoader over a sharded data set: workers, pinned memory, disjoint per-rank shards,
a deterministic order that a checkpoint can resume exactly.

::

    from trainer import data, loader
    manifest = data.read_manifest(os.environ["DATA_URI"])
    train = loader.ShardLoader(manifest, "train", ctx.rank, ctx.world_size, batch_size=128, seed=0,
                               collate=my_batch, workers=4, pin_memory=True)
    for step, (x, y) in enumerate(train.epoch(epoch, start_step), start=start_step): ...

Order: the rank's batches are those of :class:`trainer.data.ShardReader` (its segment plan), a
pure function of (seed, epoch, world-size history), never of the number of workers. Worker *w* of
*N* builds batches *w*, *w+N*, … (it slices the others away undecoded) and the DataLoader returns
them round-robin, so the sequence is the same with 0 or 8 workers. The shards are downloaded once
per process into a local cache shared by the workers (file locks), deleted when the loader is.
``collate(batch: dict[str, numpy.ndarray]) -> anything`` runs in the workers: decode images there.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from trainer import data


class _Batches(IterableDataset[Any]):
    def __init__(self, reader: data.ShardReader, collate: Callable[[dict[str, np.ndarray]], Any]) -> None:
        self.reader, self.collate = reader, collate
        self.epoch, self.start = 0, 0

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        n, w = (1, 0) if info is None else (info.num_workers, info.id)
        start = self.start

        def mine(step: int) -> bool:
            return (step - start) % n == w

        for batch in self.reader.epoch(self.epoch, start, only=mine if n > 1 else None):
            yield self.collate(batch)


def _worker_init(_worker_id: int) -> None:
    # A forked worker must not share the parent's HTTP connections: a storage client of its own.
    from trainer import gcs

    gcs.forget_clients()


class ShardLoader:
    def __init__(
        self,
        manifest: data.Manifest,
        split: str,
        rank: int,
        world: int,
        batch_size: int,
        collate: Callable[[dict[str, np.ndarray]], Any],
        seed: int = 0,
        shuffle: bool = True,
        workers: int = 2,
        pin_memory: bool = False,
        prefetch_factor: int = 2,
        blobs: dict[str, bytes] | None = None,
        drop_last: bool = True,
    ) -> None:
        self.cache_dir = tempfile.mkdtemp(prefix="trainer-shards-") if blobs is None else None
        self.reader = data.ShardReader(
            manifest,
            split,
            rank,
            world,
            batch_size,
            seed,
            shuffle=shuffle,
            blobs=blobs,
            prefetch=1 if workers == 0 else 0,
            drop_last=drop_last,
            cache_dir=self.cache_dir,
        )
        self.dataset = _Batches(self.reader, collate)
        self.workers, self.pin_memory, self.prefetch_factor = workers, pin_memory, prefetch_factor

    def steps_per_epoch(self, epoch: int) -> int:
        return self.reader.steps_per_epoch(epoch)

    def set_history(self, epoch: int, history: list[tuple[int, int]]) -> None:
        """The epoch's world-size history (elastic resize; see trainer.data.epoch_plan)."""
        self.reader.histories[epoch] = history

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Any]:
        self.dataset.epoch, self.dataset.start = epoch, start_step
        kwargs: dict[str, Any] = {}
        if self.workers > 0:
            kwargs = {
                "prefetch_factor": self.prefetch_factor,
                "persistent_workers": False,
                "multiprocessing_context": "fork",
            }
        # A generator of its own: creating a DataLoader iterator draws a base seed from it, which
        # must not come from the global RNG (dropout) -- a resume creates iterators at other steps.
        gen = torch.Generator()
        gen.manual_seed(self.reader.seed * 1000003 + epoch)
        loader = DataLoader(
            self.dataset,
            batch_size=None,
            num_workers=self.workers,
            generator=gen,
            worker_init_fn=_worker_init if self.workers else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            **kwargs,
        )
        yield from loader

    def close(self) -> None:
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)

    def __del__(self) -> None:
        self.close()
