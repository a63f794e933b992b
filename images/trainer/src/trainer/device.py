"""Which device a process trains on, and a loud failure when a GPU job cannot use CUDA.

``--device auto`` (the default) means CUDA when the pod was given an NVIDIA GPU (the device plugin
mounts ``/dev/nvidia<N>``; ``/proc/driver/nvidia/gpus`` lists them) and CPU otherwise. When the pod
has a GPU but torch cannot use it -- typically a node driver older than the CUDA version torch was
built for -- the trainer stops at start with exit 3 and a message naming both versions, instead of
training on CPU. ``--device cpu`` opts into CPU explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from trainer.exitcodes import CudaUnavailable

DEVICES = ("auto", "cuda", "cpu")


def pod_has_gpu() -> bool:
    """The pod was given an NVIDIA GPU (independent of whether torch can use it)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    return any(Path("/dev").glob("nvidia[0-9]*")) or any(Path("/proc/driver/nvidia/gpus").glob("*"))


def driver_version() -> str | None:
    """The kernel driver's version, from /proc (no nvidia-smi needed)."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    m = re.search(r"Kernel Module\s+(?:for \S+\s+)?([0-9.]+)", text)
    return m.group(1) if m else text.splitlines()[0].strip() if text else None


def cuda_problem(torch: Any) -> str | None:
    """None when CUDA works, else why not (the error CUDA initialisation raised)."""
    try:
        if not torch.cuda.is_available():
            # is_available() hides the reason; init() raises it (e.g. "driver too old").
            torch.cuda.init()
            return "torch.cuda.is_available() is False"
        torch.zeros(1, device="cuda")
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    return None


def select(kind: str, local_rank: int = 0) -> Any:
    """The torch.device to train on; raises CudaUnavailable (exit 3) for a GPU job without usable CUDA."""
    import torch

    if kind not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {kind!r}")
    want_cuda = kind == "cuda" or (kind == "auto" and pod_has_gpu())
    if not want_cuda:
        return torch.device("cpu")
    problem = cuda_problem(torch)
    if problem is not None:
        why = "--device=cuda" if kind == "cuda" else "the pod has an NVIDIA GPU (/dev/nvidia*)"
        raise CudaUnavailable(
            f"{why} but CUDA is not usable: {problem}. torch {torch.__version__} is built for CUDA "
            f"{torch.version.cuda or 'none (a CPU build)'}; node driver {driver_version() or 'not found'}. "
            "Use a node image whose driver supports that CUDA version (GKE: gpu-driver-version=latest), "
            "or pass --device=cpu to train on CPU on purpose"
        )
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise CudaUnavailable(f"local rank {local_rank} needs GPU {local_rank} but only {count} are visible")
    return torch.device(f"cuda:{local_rank}")


def enable_tf32(torch: Any, on: bool = True) -> bool:
    """TF32 matmuls and convolutions on Ampere (sm_80) and newer; returns whether it applied."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return False
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on
    return on
