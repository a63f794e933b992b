"""The training-operator's environment contract (v1.9.4), turned into a global rank and world size.

What the operator sets in every PyTorchJob container (pkg/controller.v1/pytorch/envvar.go):

- with a Master replica: ``MASTER_ADDR``/``MASTER_PORT`` (and ``PET_MASTER_ADDR``/``PET_MASTER_PORT``);
  ``RANK`` = ``PET_NODE_RANK`` = the pod's index (Master 0, Worker i → i+1), so RANK counts *pods*;
  ``WORLD_SIZE`` = total replicas x nprocPerNode when nprocPerNode is an integer, else total replicas;
- ``PET_NPROC_PER_NODE`` = spec.nprocPerNode (defaulted to ``auto``), ``PET_NNODES`` = total replicas
  (``min:max`` with an elasticPolicy, which also sets ``PET_RDZV_ENDPOINT``/``PET_RDZV_BACKEND``, …).

torchrun reads every ``PET_<OPTION>`` variable as the default of ``--<option>``, and then overwrites
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``… in each worker process with per-process
values. So a process is in one of three situations, which :func:`resolve` tells apart:

``torchrun``
    started by torchrun (``TORCHELASTIC_RUN_ID``/``LOCAL_RANK`` present): RANK/WORLD_SIZE are global.
``launch``
    started directly in a pod that asks for more than one process per node, or for elastic
    rendezvous: the trainer must re-exec itself under torchrun (:func:`torchrun_argv`).
``pod``
    one process per pod: node rank = global rank, world size = number of pods.
``single``
    no distributed environment at all (a laptop, a unit test): rank 0 of 1.

This module does not import torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trainer.gcs import TrainerError


@dataclass(frozen=True)
class DistEnv:
    mode: str  # torchrun | launch | pod | single
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    nnodes: int
    master_addr: str | None
    master_port: int | None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.mode == "torchrun"


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    raw = env.get(name)
    try:
        value = int(str(raw).strip())
    except (TypeError, ValueError):
        raise TrainerError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise TrainerError(f"environment variable {name} must be >= {minimum}, got {value}")
    return value


def nproc_per_node(value: str | None, gpus: int | None = None) -> int:
    """What torchrun makes of ``--nproc-per-node``: an int, ``gpu``, ``cpu`` or ``auto``."""
    if value is None or value == "":
        return 1
    value = value.strip()
    if value.isdigit():
        n = int(value)
        if n < 1:
            raise TrainerError(f"PET_NPROC_PER_NODE must be >= 1, got {value!r}")
        return n
    if gpus is None:
        gpus = _cuda_devices()
    if value == "gpu":
        if gpus < 1:
            raise TrainerError("PET_NPROC_PER_NODE=gpu but this node has no visible GPU")
        return gpus
    if value == "cpu":
        return os.cpu_count() or 1
    if value == "auto":
        return gpus if gpus > 0 else 1
    raise TrainerError(f"PET_NPROC_PER_NODE must be an integer, gpu, cpu or auto, got {value!r}")


def _cuda_devices() -> int:
    """GPUs this process could use, without importing torch when the answer is plainly 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    if not Path("/dev/nvidiactl").exists() and not Path("/proc/driver/nvidia").exists():
        return 0
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def resolve(env: Mapping[str, str] | None = None, gpus: int | None = None) -> DistEnv:
    """Global rank and world size for this process; see the module doc for the four modes."""
    env = os.environ if env is None else env
    addr = env.get("MASTER_ADDR") or env.get("PET_MASTER_ADDR")
    port = (
        _int(env, "MASTER_PORT", 1)
        if env.get("MASTER_PORT")
        else (_int(env, "PET_MASTER_PORT", 1) if env.get("PET_MASTER_PORT") else None)
    )

    if env.get("TORCHELASTIC_RUN_ID") is not None or env.get("LOCAL_RANK") is not None:
        rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE", 1)
        local_world = _int(env, "LOCAL_WORLD_SIZE", 1) if env.get("LOCAL_WORLD_SIZE") else 1
        if rank >= world:
            raise TrainerError(f"RANK={rank} is not below WORLD_SIZE={world}")
        return DistEnv(
            "torchrun",
            rank,
            world,
            _int(env, "LOCAL_RANK"),
            local_world,
            _int(env, "GROUP_RANK") if env.get("GROUP_RANK") else rank // local_world,
            max(1, world // local_world),
            addr,
            port,
        )

    elastic = bool(env.get("PET_RDZV_ENDPOINT"))
    nnodes_env = env.get("PET_NNODES", "")
    if nnodes_env.isdigit() and int(nnodes_env) > 1 and not addr and not elastic:
        # training-operator v1.9.4 sets MASTER_ADDR/RANK/WORLD_SIZE only when there is a Master
        # replica, and rendezvous variables only with an elasticPolicy: each pod would train alone.
        raise TrainerError(
            f"PET_NNODES={nnodes_env} but neither MASTER_ADDR nor PET_RDZV_ENDPOINT is set: a PyTorchJob with "
            "only Worker replicas needs a Master replica or an elasticPolicy (jobgen refuses such a spec)"
        )
    nproc = nproc_per_node(env.get("PET_NPROC_PER_NODE"), gpus)
    if nproc > 1 or elastic:
        nnodes = env.get("PET_NNODES", "1")
        node_rank = (
            _int(env, "PET_NODE_RANK") if env.get("PET_NODE_RANK") else (_int(env, "RANK") if env.get("RANK") else 0)
        )
        fixed = nnodes.isdigit()
        world = int(nnodes) * nproc if fixed else -1  # elastic: known after rendezvous
        return DistEnv("launch", -1, world, -1, nproc, node_rank, int(nnodes) if fixed else -1, addr, port)

    if env.get("WORLD_SIZE") is not None or env.get("RANK") is not None:
        if not addr or port is None:
            raise TrainerError("RANK/WORLD_SIZE are set but MASTER_ADDR/MASTER_PORT are not")
        # One process per pod: the operator's RANK is the pod index, which is then the global rank.
        world = _int(env, "WORLD_SIZE", 1)
        if env.get("PET_NNODES", "").isdigit() and int(env["PET_NNODES"]) != world:
            raise TrainerError(f"WORLD_SIZE={world} but PET_NNODES={env['PET_NNODES']} with one process per pod")
        rank = _int(env, "RANK")
        if rank >= world:
            raise TrainerError(f"RANK={rank} is not below WORLD_SIZE={world}")
        return DistEnv("pod", rank, world, 0, 1, rank, world, addr, port)

    return DistEnv("single", 0, 1, 0, 1, 0, 1, addr, port)


def job_name(env: Mapping[str, str] | None = None) -> str:
    """The PyTorchJob/TFJob name, from JOB_NAME (jobgen sets it on every replica); "" when unknown."""
    env = os.environ if env is None else env
    return env.get("JOB_NAME", "").strip()


def torchrun_argv(dist: DistEnv, target: list[str], args: list[str]) -> list[str]:
    """The command that re-executes ``target args`` under torchrun in this pod.

    ``target`` is ``["-m", "module"]`` or ``["script.py"]``. torchrun takes nnodes/node-rank/master/
    rendezvous options from the operator's PET_* variables; only nproc-per-node is passed
    explicitly, resolved (``auto``/``gpu`` → a number)."""
    argv = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={dist.local_world_size}"]
    if dist.nnodes == 1 and not os.environ.get("PET_RDZV_ENDPOINT") and not dist.master_addr:
        argv.append("--standalone")
    return [*argv, *target, *args]
