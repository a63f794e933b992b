"""Bring your own training script: torchvision ResNet-18 with AMP on webdataset-style image shards,
using the trainer package as a library. Runs unchanged on CPU (gloo) and on GPUs (nccl).

In a PyTorchJob (examples/byo_resnet/job.yaml)::

    command: [python, -m, trainer.launch, examples/byo_resnet/train.py]

``trainer.launch`` runs it under torchrun when the pod asks for several processes and keeps the
exit-code contract (143 on preemption, 138 transient, 2 bad input, 3 no CUDA). The job spec's
hyperparameters arrive typed in ``Params`` (JOBGEN_HYPERPARAMETERS and --name=value flags).
Storage comes from DATA_URI (a data set of PNG tar shards: shapes.py makes one), CHECKPOINT_URI
(optional: sharded async DCP checkpoints, exact resume) and OUTPUT_URI (optional: the registry).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os

import numpy as np
import torch
import torchvision
from PIL import Image
from trainer import ckpt, context, data, hparams, launch, loader, registry
from trainer.gcs import TrainerError

log = logging.getLogger("byo")


@dataclasses.dataclass
class Params:
    lr: float = 0.05
    epochs: int = 3
    batch_size: int = 32
    precision: str = "bf16"  # autocast dtype: bf16, fp16 (CUDA only) or fp32
    workers: int = 2
    checkpoint_every: int = 20
    stop_check_every: int = 5
    seed: int = 0
    device: str = "auto"
    model_version: str = ""


MEAN = torch.tensor([0.3, 0.3, 0.3]).view(1, 3, 1, 1)
STD = torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1)


def decode(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """PNG bytes -> normalised float NCHW; runs in the DataLoader workers."""
    imgs = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in batch["png"]])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - MEAN) / STD, torch.from_numpy(batch["cls"].astype(np.int64))


def resnet18(num_classes: int) -> torch.nn.Module:
    """torchvision's ResNet-18 with the small-image stem (3x3 conv, no max-pool) for 32x32 inputs."""
    net = torchvision.models.resnet18(num_classes=num_classes)
    net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = torch.nn.Identity()
    return net


def main() -> int:
    p = hparams.load(Params)
    if p.precision not in ("bf16", "fp16", "fp32"):
        raise TrainerError(f"hyperparameter precision: expected bf16, fp16 or fp32, got {p.precision!r}")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {os.environ.get('RANK', '0')}] %(message)s")
    if not os.environ.get("DATA_URI"):
        raise TrainerError("DATA_URI is not set (make a data set with examples/byo_resnet/shapes.py)")
    ctx = context.init(device=p.device, stop_check_every=p.stop_check_every)
    manifest = data.read_manifest(os.environ["DATA_URI"])
    cuda = ctx.device.type == "cuda"
    train = loader.ShardLoader(
        manifest,
        "train",
        ctx.rank,
        ctx.world_size,
        p.batch_size,
        decode,
        seed=p.seed,
        workers=p.workers,
        pin_memory=cuda,
    )
    val = loader.ShardLoader(
        manifest,
        "val",
        ctx.rank,
        ctx.world_size,
        100,
        decode,
        shuffle=False,
        workers=p.workers,
        pin_memory=cuda,
        drop_last=False,
    )

    torch.manual_seed(p.seed)
    net = resnet18(manifest.num_classes).to(ctx.device)
    if cuda:
        net = net.to(memory_format=torch.channels_last)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    model = ctx.wrap(net)
    opt = torch.optim.SGD(net.parameters(), lr=p.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(p.precision)
    if amp is torch.float16 and not cuda:
        raise TrainerError("hyperparameter precision: fp16 needs CUDA; use bf16 on CPU")
    scaler = torch.amp.GradScaler("cuda") if amp is torch.float16 else None
    steps_per_epoch = train.steps_per_epoch(0)
    total = p.epochs * steps_per_epoch

    mgr = None
    epoch, start, step, version = 0, 0, 0, p.model_version or ctx.broadcast(registry.new_version())
    torch.manual_seed(p.seed + 1 + ctx.rank)
    if os.environ.get("CHECKPOINT_URI"):
        mgr = ckpt.CheckpointManager(os.environ["CHECKPOINT_URI"], ctx.rank, ctx.world_size)
        got = ckpt.restore_training(mgr, ctx.broadcast, model, opt, dataclasses.asdict(p), manifest.lineage())
        if got is not None:
            meta, _ = got
            epoch, start, step, version = meta["epoch"], meta["start"], meta["step"], meta["version"]
            log.info("resumed from checkpoint step %d", step)

    def save(block: bool = False) -> None:
        if mgr is not None:
            ckpt.save_training(
                mgr,
                step,
                model,
                opt,
                {
                    "epoch": epoch,
                    "start": start,
                    "step": step,
                    "version": version,
                    "args": dataclasses.asdict(p),
                    "data": manifest.lineage(),
                },
                block=block,
            )

    first = next(iter(train.epoch(0)))[0]
    ctx.settle(model, first)
    model.train()
    while epoch < p.epochs:
        for xb, yb in train.epoch(epoch, start):
            for g in opt.param_groups:  # cosine over the run
                g["lr"] = p.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            x, y = xb.to(ctx.device, non_blocking=True), yb.to(ctx.device, non_blocking=True)
            if cuda:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(ctx.device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            step, start = step + 1, start + 1
            if ctx.is_main and step % 10 == 0:
                print(f"step {step} epoch {epoch} loss {loss.item():.4f}", flush=True)
            if step % p.checkpoint_every == 0:
                save()
            if ctx.preemption.agreed(step):
                if mgr is not None:
                    mgr.wait()
                    save(block=True)
                return 143
        epoch, start = epoch + 1, 0

    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    with torch.no_grad(), torch.autocast(ctx.device.type, dtype=amp or torch.float32, enabled=amp is not None):
        for x, y in val.epoch(0):
            out = net(x.to(ctx.device))
            sums += torch.tensor(
                [(out.argmax(1).cpu() == y).sum().item(), len(y)], dtype=torch.float64, device=ctx.device
            )
    ctx.all_reduce_sum(sums)
    acc = (sums[0] / sums[1]).item()
    if mgr is not None:
        mgr.wait()
        save(block=True)
        mgr.close()
    if ctx.is_main:
        print(f"val_accuracy {acc:.4f}", flush=True)
        if os.environ.get("OUTPUT_URI"):
            files, export = registry.torch_files(net, first[:2].to(ctx.device))
            reg = registry.Registry(os.environ["OUTPUT_URI"])
            lineage = {
                "data": manifest.lineage(),
                "job_name": os.environ.get("JOB_NAME", ""),
                **registry.image_lineage(),
                "hyperparameters": dataclasses.asdict(p),
                "export": export,
                "world_size": ctx.world_size,
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
            }
            reg.publish(version, files, {"val_accuracy": acc, "steps": step}, lineage, [])
            reg.promote(version, "val_accuracy", acc, "max")
    ctx.barrier()
    train.close()
    val.close()
    ctx.close()
    return 0


if __name__ == "__main__":
    launch.run(main, "examples/byo_resnet/train.py")
