"""The distributed context of one training process, from the training-operator's environment.

For a user's own script (run by ``python -m trainer.launch script.py`` in the pod)::

    from trainer import context
    ctx = context.init(device="auto")      # rank, world size, device, process group, preemption flag
    model = ctx.wrap(model)                 # DistributedDataParallel when world > 1
    ...
    if ctx.preemption.agreed(step):         # a SIGTERM reached some rank: checkpoint and exit 143
        ...
    ctx.close()

``init`` reads the env contract (:mod:`trainer.env`), picks the device (:mod:`trainer.device`: no
silent CPU fallback), and initialises ``torch.distributed`` (nccl on CUDA, gloo on CPU). The
collectives used for control (stop flag, broadcasts) run on the default group.
"""

from __future__ import annotations

import datetime
import logging
import signal
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as tdist

from trainer import device as device_mod
from trainer import env
from trainer.gcs import TrainerError

log = logging.getLogger("trainer")


class Preemption:
    """SIGTERM/SIGINT set a flag (GKE: a spot reclaim gives the pod ~15 s); ranks agree on it."""

    def __init__(self, ctx: Context, every: int = 10) -> None:
        self.ctx, self.every = ctx, every
        self.signum: int | None = None
        self.at: float | None = None

    def install(self) -> None:
        import time

        def handler(signum: int, _frame: Any) -> None:
            if self.signum is None:
                self.signum, self.at = signum, time.monotonic()
                log.warning("received signal %d: will checkpoint and stop at the next check", signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self, step: int | None = None) -> bool:
        """True on every rank once any rank got a signal (checked every ``every`` steps: one
        4-byte all-reduce). Call it at the same steps on every rank."""
        if step is not None and step % self.every:
            return False
        if not self.ctx.distributed:
            return self.requested
        flag = torch.tensor([1 if self.requested else 0], dtype=torch.int32, device=self.ctx.device)
        tdist.all_reduce(flag, op=tdist.ReduceOp.MAX)
        return bool(flag.item())


@dataclass
class Context:
    dist: env.DistEnv
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: not distributed
    preemption: Preemption = field(init=False)

    def __post_init__(self) -> None:
        self.preemption = Preemption(self)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module, **ddp_kwargs: Any) -> torch.nn.Module:
        model = model.to(self.device)
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=ids, **ddp_kwargs)

    def settle(self, model: torch.nn.Module, example: Any) -> None:
        """Make DDP's gradient-bucket layout the same for every step of every process.

        DDP rebuilds its buckets (in gradient-ready order) after the first iteration of a process.
        A process that resumes mid-run would run its first step on the initial layout where the
        uninterrupted run used the rebuilt one; with three or more ranks the all-reduce then adds
        in another order and the weights are no longer bitwise equal. This runs one forward and
        backward that change nothing (eval mode: no dropout, no BatchNorm statistics; a zero
        loss; RNG state restored; gradients dropped), so the real first step already uses the
        rebuilt layout. Call it once, after restoring a checkpoint, on every rank."""
        if not self.distributed or not hasattr(model, "no_sync"):
            return
        rng = torch.get_rng_state()
        was_training = model.training
        model.eval()
        out = model(example.to(self.device))
        (out.float().sum() * 0.0).backward()
        model.train(was_training)
        for p in model.parameters():
            p.grad = None
        torch.set_rng_state(rng)

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=src)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            tdist.all_reduce(t)
        return t

    def close(self) -> None:
        if self.distributed and tdist.is_initialized():
            tdist.destroy_process_group()


def init(
    device: str = "auto",
    backend: str = "auto",
    timeout_s: float = 600.0,
    stop_check_every: int = 10,
    install_signals: bool = True,
) -> Context:
    """The context of this process. Raises TrainerError (exit 2) on an inconsistent env and
    CudaUnavailable (exit 3) for a GPU pod whose CUDA does not work."""
    dist = env.resolve()
    if dist.mode == "launch":
        raise TrainerError(
            "this pod asks for several processes per node (or elastic rendezvous): start the "
            "script with `python -m trainer.launch script.py`, which runs it under torchrun"
        )
    dev = device_mod.select(device, dist.local_rank)
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl" and dev.type != "cuda":
        raise TrainerError("--backend=nccl needs CUDA; use gloo on CPU")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    distributed = dist.world_size > 1 or dist.mode == "torchrun"
    if distributed and not tdist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        tdist.init_process_group(
            backend, rank=dist.rank, world_size=dist.world_size, timeout=datetime.timedelta(seconds=timeout_s), **kwargs
        )
    ctx = Context(dist, dist.rank, dist.world_size, dist.local_rank, dev, backend if distributed else None)
    ctx.preemption.every = stop_check_every
    if install_signals:
        ctx.preemption.install()
    return ctx
