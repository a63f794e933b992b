"""Distributed data-parallel training: ``python -m trainer.train [--name=value …]``.

The built-in trainer, itself written on the library a user's own script uses (trainer.context,
trainer.loader, trainer.ckpt, trainer.registry). Reads ``DATA_URI``/``OUTPUT_URI``/``CHECKPOINT_URI``
(or the flags of the same name) and the training-operator's env contract, trains with DDP
(bf16/fp16 autocast, TF32, gradient accumulation and clipping, SGD or AdamW, optional
torch.compile), checkpoints asynchronously with torch.distributed.checkpoint every N steps and on
SIGTERM, resumes exactly from the latest complete checkpoint, and publishes to the registry.

Exit codes: the table in trainer.exitcodes (0 done, 1 bug, 2 bad input, 3 no usable CUDA,
138 transient infrastructure failure, 143 preempted after checkpointing).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import random
import re
import sys
import time
from typing import Any, cast

import numpy as np

from trainer import __version__, exitcodes, hparams, launch
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer")

EXIT_USAGE = exitcodes.USAGE
EXIT_PREEMPTED = exitcodes.PREEMPTED
METRICS = {"val_accuracy": "max", "val_loss": "min"}


# ---------------------------------------------------------------------------------------------
# Hyperparameters: validated by argparse, before torch is even imported.


def ranged(
    kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False
) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise argparse.ArgumentTypeError(f"must be {'>' if lo_open else '>='} {lo}, got {text}")
        if hi is not None and (value >= hi if hi_open else value > hi):
            raise argparse.ArgumentTypeError(f"must be {'<' if hi_open else '<='} {hi}, got {text}")
        return value

    return parse


def _hook(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", text):
        raise argparse.ArgumentTypeError(f"must be module:function, got {text!r}")
    return text


def gs_uri(what: str) -> Any:
    def parse(text: str) -> str:
        if text == "":
            return ""
        try:
            GcsUri.parse(text, what)
        except TrainerError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def version_name(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", text):
        raise argparse.ArgumentTypeError(f"must be 1-128 characters of A-Z a-z 0-9 . _ -, got {text!r}")
    return text


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes"):
        return True
    if t in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer.train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="DDP training with GCS data, exact checkpoint/resume and a versioned model registry.",
    )
    h = p.add_argument_group("hyperparameters")
    h.add_argument("--lr", type=ranged(float, 0, 10, lo_open=True), default=0.05, help="peak learning rate")
    h.add_argument("--epochs", type=ranged(int, 1, 100000), default=2, help="passes over the training split")
    h.add_argument(
        "--batch-size", type=ranged(int, 1, 1 << 20), default=64, help="examples per micro-batch per process"
    )
    h.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd", help="SGD (momentum) or AdamW")
    h.add_argument("--momentum", type=ranged(float, 0, 1, hi_open=True), default=0.9, help="SGD momentum")
    h.add_argument("--weight-decay", type=ranged(float, 0, 1), default=0.0, help="weight decay (decoupled for AdamW)")
    h.add_argument(
        "--scheduler",
        choices=["cosine", "constant", "step"],
        default="cosine",
        help="LR schedule over the samples of the run (step: x0.1 at 1/2 and 3/4)",
    )
    h.add_argument(
        "--warmup",
        type=ranged(float, 0, 1, hi_open=True),
        default=0.0,
        help="fraction of the run with a linear LR warm-up",
    )
    h.add_argument("--grad-accum", type=ranged(int, 1, 4096), default=1, help="micro-batches per optimizer step")
    h.add_argument("--clip-grad-norm", type=ranged(float, 0), default=0.0, help="clip the global grad norm (0: off)")
    h.add_argument(
        "--precision", choices=["fp32", "bf16", "fp16"], default="fp32", help="autocast dtype (fp16 adds a GradScaler)"
    )
    h.add_argument("--tf32", type=_bool, default=True, help="TF32 matmuls/convolutions on Ampere and newer GPUs")
    h.add_argument("--hidden", type=ranged(int, 1, 1 << 16), default=128, help="hidden width of the default model")
    h.add_argument(
        "--dropout", type=ranged(float, 0, 1, hi_open=True), default=0.1, help="dropout of the default model"
    )
    h.add_argument("--seed", type=ranged(int, 0, 2**32 - 1), default=0, help="seed for init, data order and dropout")
    h.add_argument(
        "--max-steps", type=ranged(int, 0), default=0, help="stop after this many optimizer steps (0: no limit)"
    )
    r = p.add_argument_group("runtime")
    r.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="auto: CUDA when the pod has an NVIDIA GPU (and fail, exit 3, if CUDA is unusable), else CPU",
    )
    r.add_argument(
        "--backend",
        choices=["auto", "gloo", "nccl"],
        default="auto",
        help="torch.distributed backend (auto: nccl on CUDA, else gloo)",
    )
    r.add_argument("--compile", type=_bool, default=False, help="torch.compile the model (needs a C compiler on CPU)")
    r.add_argument("--workers", type=ranged(int, 0, 64), default=0, help="DataLoader worker processes per rank")
    r.add_argument("--checkpoint-every", type=ranged(int, 1), default=200, help="optimizer steps between checkpoints")
    r.add_argument("--keep-checkpoints", type=ranged(int, 1), default=3, help="checkpoints kept in CHECKPOINT_URI")
    r.add_argument("--async-checkpoint", type=_bool, default=True, help="save checkpoints in the background (DCP)")
    r.add_argument(
        "--allow-resume-changes",
        type=_bool,
        default=False,
        help="resume even if the checkpoint's arguments or data differ from this run's",
    )
    r.add_argument(
        "--stop-check-every",
        type=ranged(int, 1),
        default=10,
        help="optimizer steps between checks (one all-reduce) for a SIGTERM on any rank",
    )
    r.add_argument("--log-every", type=ranged(int, 1), default=50, help="steps between loss log lines")
    r.add_argument(
        "--model",
        type=_hook,
        default="trainer.model:default_model",
        help="model hook module:function(input_dim, num_classes, args) -> nn.Module",
    )
    r.add_argument(
        "--batch-fn",
        type=_hook,
        default="trainer.model:default_batch",
        help="batch hook module:function(dict of numpy arrays) -> (inputs, targets)",
    )
    r.add_argument(
        "--metric",
        choices=sorted(METRICS),
        default="val_accuracy",
        help="metric that decides promotion to LATEST (val_accuracy: higher wins; val_loss: lower)",
    )
    r.add_argument(
        "--model-version",
        type=version_name,
        default=None,
        help="registry version (default: UTC start time + random suffix, kept across resumes)",
    )
    r.add_argument(
        "--require-export",
        type=_bool,
        default=False,
        help="fail (exit 2) when torch.export cannot export the model, instead of publishing without model.pt2",
    )
    add_storage_arguments(p.add_argument_group("storage (default: the environment variables jobgen sets)"))
    return p


def add_storage_arguments(
    group: argparse._ActionsContainer,
    checkpoint_help: str = "checkpoint prefix; unset: no checkpoints, no resume",
) -> None:
    """--job-name, --data-uri, --output-uri and --checkpoint-uri, each defaulting to the environment
    variable jobgen sets (JOB_NAME, DATA_URI, OUTPUT_URI, CHECKPOINT_URI). Shared with tf_trainer."""
    group.add_argument(
        "--job-name",
        default=os.environ.get("JOB_NAME", ""),
        help="job name for lineage (default: $JOB_NAME, set by jobgen)",
    )
    group.add_argument(
        "--data-uri",
        type=gs_uri("DATA_URI"),
        default=os.environ.get("DATA_URI", ""),
        help="data set prefix (manifest.json); unset: the built-in generated data set",
    )
    group.add_argument(
        "--output-uri",
        type=gs_uri("OUTPUT_URI"),
        default=os.environ.get("OUTPUT_URI", ""),
        help="registry root gs://<models>/<model>; unset: nothing is published",
    )
    group.add_argument(
        "--checkpoint-uri",
        type=gs_uri("CHECKPOINT_URI"),
        default=os.environ.get("CHECKPOINT_URI", ""),
        help=checkpoint_help,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Known options, plus the job spec's own hyperparameters (JOBGEN_HYPERPARAMETERS) in ``args.custom``."""
    p = parser()
    args, unknown = p.parse_known_args(argv)
    custom: dict[str, Any] = {}
    decl = {}
    try:
        decl = hparams.declared()
    except TrainerError as exc:
        p.error(str(exc))
    known = {a.dest for a in p._actions}
    for name, (kind, value) in decl.items():
        if name.replace("-", "_") not in known:
            custom[name.replace("-", "_")] = hparams.convert(name, hparams._TYPES[kind], value)
    if unknown:
        try:
            flags, rest = hparams.split_flags(unknown)
        except TrainerError as exc:
            p.error(str(exc))
        if rest or any(k not in custom for k in flags):
            p.error(
                f"unrecognized arguments: {' '.join(unknown)} (a custom hyperparameter must be declared in the "
                "job spec, which passes it in JOBGEN_HYPERPARAMETERS)"
            )
        for k, v in flags.items():
            kind = decl.get(k, decl.get(k.replace("_", "-"), ("str", None)))[0]
            try:
                custom[k] = hparams.convert(k, hparams._TYPES[kind], v)
            except TrainerError as exc:
                p.error(str(exc))
    args.custom = custom
    if args.output_uri:
        try:
            GcsUri.parse(args.output_uri).path or p.error(
                f"argument --output-uri: must be gs://<models>/<model>, got {args.output_uri!r}"
            )
        except TrainerError as exc:
            p.error(str(exc))
    if args.precision == "fp16" and args.device == "cpu":
        p.error("argument --precision: fp16 needs CUDA; use bf16 on CPU")
    return args


# ---------------------------------------------------------------------------------------------
# Training


def lr_factor(kind: str, progress: float, warmup: float = 0.0) -> float:
    """The LR multiplier at ``progress`` = samples seen / samples of the whole run (elastic-safe)."""
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return p / warmup
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * p))
    if kind == "step":
        return 0.01 if p >= 0.75 else (0.1 if p >= 0.5 else 1.0)
    return 1.0


class Trainer:
    def __init__(self, args: argparse.Namespace, dataset: tuple[Any, dict[str, bytes] | None] | None = None) -> None:
        """``dataset``: an in-memory (manifest, shard bytes) pair instead of DATA_URI (benchmarks)."""
        import torch

        from trainer import context, data, device, loader, registry

        self.args = args
        self.torch = torch
        self.started_at = registry.now()

        # Everything that can fail on bad input happens here, before any compute.
        self.model_fn = data.load_hook(args.model, "--model")
        self.batch_fn = data.load_hook(args.batch_fn, "--batch-fn")
        if dataset is not None:
            self.manifest, blobs = dataset
        elif args.data_uri:
            self.manifest = data.read_manifest(args.data_uri)
            blobs = None
        else:
            arrays, classes = data.synthetic(seed=args.seed)
            self.manifest, blobs = data.in_memory(arrays, classes)
        self.registry = registry.Registry(args.output_uri) if args.output_uri else None

        self.ctx = context.init(args.device, args.backend, stop_check_every=args.stop_check_every)
        self.rank, self.world, self.device = self.ctx.rank, self.ctx.world_size, self.ctx.device
        self.backend = self.ctx.backend or "none"
        if args.precision == "fp16" and self.device.type != "cuda":
            raise TrainerError("--precision=fp16 needs CUDA; use bf16 on CPU")
        self.tf32 = device.enable_tf32(torch, args.tf32)

        self.train_loader = loader.ShardLoader(
            self.manifest,
            "train",
            self.rank,
            self.world,
            args.batch_size,
            self.batch_fn,
            args.seed,
            shuffle=True,
            workers=args.workers,
            pin_memory=self.device.type == "cuda",
            blobs=blobs,
        )
        self.val_loader = (
            loader.ShardLoader(
                self.manifest,
                "val",
                self.rank,
                self.world,
                256,
                self.batch_fn,
                args.seed,
                shuffle=False,
                workers=0,
                blobs=blobs,
                drop_last=False,
            )
            if "val" in self.manifest.splits
            else None
        )
        if self.train_loader.steps_per_epoch(0) // args.grad_accum < 1:
            raise TrainerError(
                f"--batch-size={args.batch_size} x --grad-accum={args.grad_accum} is larger than one "
                f"rank's share of the training split ({self.manifest.uri}) with {self.world} processes"
            )
        self.train_records = sum(s.records for s in self.manifest.splits["train"])

        torch.manual_seed(args.seed)  # identical initial weights on every rank
        net = self.model_fn(self.manifest.input_dim, self.manifest.num_classes, args)
        if not isinstance(net, torch.nn.Module):
            raise TrainerError(f"--model {args.model} returned {type(net).__name__}, not a torch.nn.Module")
        self.net = net.to(self.device)
        random.seed(args.seed + self.rank)
        np.random.seed(args.seed + self.rank)
        torch.manual_seed(args.seed + 1 + self.rank)  # per-rank dropout
        self.model = self.ctx.wrap(self.net)
        self.forward = torch.compile(self.model) if args.compile else self.model
        if args.optimizer == "adamw":
            self.opt: Any = torch.optim.AdamW(self.net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        else:
            self.opt = torch.optim.SGD(
                self.net.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
            )
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
        self.scaler = torch.amp.GradScaler(self.device.type) if args.precision == "fp16" else None
        self.ckpt = None
        if args.checkpoint_uri:
            from trainer import ckpt

            self.ckpt = ckpt.CheckpointManager(
                args.checkpoint_uri, self.rank, self.world, args.keep_checkpoints, async_save=args.async_checkpoint
            )

        # Position and history (restored from a checkpoint when there is one).
        self.step, self.epoch, self.micro_in_epoch, self.samples = 0, 0, 0, 0
        self.histories: dict[int, list[tuple[int, int]]] = {}
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_n = 0
        self.curves: list[dict[str, Any]] = []
        self.resumes: list[int] = []
        self.version = args.model_version or self.ctx.broadcast(registry.new_version())

    # -- checkpoints -------------------------------------------------------------------------

    def hp(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self.args).items() if k != "custom"}
        out.update({f"custom.{k}": v for k, v in self.args.custom.items()})
        return out

    def dcp_state(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.opt)
        return {"model": model_sd, "optim": optim_sd}

    def save(self, reason: str, block: bool = False) -> None:
        from trainer.ckpt import rng_state as ckpt_rng_state

        if self.ckpt is None:
            return
        meta = {
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "samples": self.samples,
            "histories": {str(k): v for k, v in self.histories.items()},
            "loss_n": self.loss_n,
            "curves": self.curves,
            "version": self.version,
            "started_at": self.started_at,
            "resumes": self.resumes,
            "args": self.hp(),
            "data": self.manifest.lineage(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "reason": reason,
            "code_version": __version__,
            "torch": self.torch.__version__,
        }
        rank_state = {"rng": ckpt_rng_state(), "loss_sum": self.loss_sum.item()}
        blocking = self.ckpt.save(self.step, self.dcp_state(), meta, rank_state, block=block)
        if self.rank == 0:
            log.info(
                "checkpoint step %d (%s): %.3fs blocking%s",
                self.step,
                reason,
                blocking,
                "" if not block else f", {self.ckpt.last_seconds:.2f}s total",
            )

    def restore(self) -> bool:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        from trainer import ckpt
        from trainer.ckpt import set_rng_state as ckpt_set_rng_state

        if self.ckpt is None:
            return False
        found = self.ckpt.latest() if self.rank == 0 else None
        step, meta = self.ctx.broadcast((found[0], found[1]) if found else (-1, None))
        if step < 0:
            return False
        ckpt.check_resume(
            meta["args"], self.hp(), self.manifest.lineage(), meta["data"], self.args.allow_resume_changes
        )
        same = int(meta["world_size"]) == self.world
        state = self.dcp_state()
        rank_state, nbytes = self.ckpt.load(step, state, same)
        set_state_dict(self.model, self.opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
        torch = self.torch
        self.epoch, self.micro_in_epoch, self.samples = meta["epoch"], meta["micro_in_epoch"], meta["samples"]
        self.histories = {int(k): [tuple(x) for x in v] for k, v in meta["histories"].items()}
        if rank_state is not None:
            ckpt_set_rng_state(rank_state["rng"])
            self.loss_sum = torch.tensor(rank_state["loss_sum"], dtype=torch.float64, device=self.device)
        else:
            log.warning(
                "world size changed %d -> %d at step %d: the rest of epoch %d is re-dealt to the new ranks "
                "(no sample skipped or repeated); dropout RNG streams reseeded",
                meta["world_size"],
                self.world,
                step,
                self.epoch,
            )
            hist = self.histories.get(self.epoch, [(0, int(meta["world_size"]))])
            self.histories[self.epoch] = [*hist, (self.micro_in_epoch, self.world)]
            torch.manual_seed(self.args.seed + 1 + self.rank + 1000 * step)
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        if self.scaler is not None and meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.loss_n = step, meta["loss_n"]
        self.curves, self.version, self.started_at = meta["curves"], meta["version"], meta["started_at"]
        self.resumes = [*meta["resumes"], step]
        log.info(
            "rank %d resumed from checkpoint step %d (epoch %d, batch %d; %.1f KiB downloaded)",
            self.rank,
            step,
            self.epoch,
            self.micro_in_epoch,
            nbytes / 1024,
        )
        return True

    # -- loop --------------------------------------------------------------------------------

    def autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.amp_dtype)

    def evaluate(self) -> tuple[float, float]:
        torch = self.torch
        if self.val_loader is None:
            return math.nan, math.nan
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss*n, correct, n
        with torch.no_grad(), self.autocast():
            for xb, yb in self.val_loader.epoch(0):
                x, y = xb.to(self.device), yb.to(self.device)
                out = self.net(x).float()
                sums[0] += torch.nn.functional.cross_entropy(out, y, reduction="sum").double()
                sums[1] += (out.argmax(1) == y).sum().double()
                sums[2] += len(y)
        self.ctx.all_reduce_sum(sums)
        self.model.train()
        n = max(1.0, sums[2].item())
        return sums[0].item() / n, sums[1].item() / n

    def total_samples(self) -> int:
        if self.args.max_steps:
            return int(self.args.max_steps * self.args.batch_size * self.args.grad_accum * self.world)
        return int(self.args.epochs * self.train_records)

    def set_lr(self) -> float:
        lr: float = self.args.lr * lr_factor(
            self.args.scheduler, self.samples / max(1, self.total_samples()), self.args.warmup
        )
        for g in self.opt.param_groups:
            g["lr"] = lr
        return lr

    def train_step(self, micro: list[tuple[Any, Any]]) -> Any:
        torch, args = self.torch, self.args
        F = torch.nn.functional
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        for i, (xb, yb) in enumerate(micro):
            x, y = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            sync = i == len(micro) - 1 or not hasattr(self.model, "no_sync")
            cm: Any = cast(Any, self.model).no_sync() if not sync else contextlib.nullcontext()
            with cm:
                with self.autocast():
                    loss = F.cross_entropy(self.forward(x).float(), y) / len(micro)
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.detach().double()
        if args.clip_grad_norm > 0:
            if self.scaler:
                self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), args.clip_grad_norm)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return total

    def train(self) -> int:
        torch, args = self.torch, self.args
        self.restore()
        for x, _ in self.train_loader.epoch(0):
            self.ctx.settle(self.model, x)
            break
        if self.rank == 0:
            log.info(
                "training %s: %d processes (%s, %s, %s), %s, from step %d",
                self.manifest.uri,
                self.world,
                self.ctx.dist.mode,
                self.backend,
                self.device,
                args.precision,
                self.step,
            )
        self.model.train()
        self.loop_seconds, self.loop_cpu_seconds, first_step = 0.0, 0.0, self.step
        global_batch = args.batch_size * args.grad_accum * self.world
        while self.epoch < args.epochs and not (args.max_steps and self.step >= args.max_steps):
            t_epoch, c_epoch = time.perf_counter(), time.process_time()
            if self.epoch in self.histories:
                self.train_loader.set_history(self.epoch, self.histories[self.epoch])
            else:
                self.histories[self.epoch] = [(0, self.world)]
            end = self.train_loader.steps_per_epoch(self.epoch)
            end -= (end - self.micro_in_epoch) % args.grad_accum  # whole optimizer steps only
            micro: list[tuple[Any, Any]] = []
            for batch in self.train_loader.epoch(self.epoch, self.micro_in_epoch):
                if self.micro_in_epoch + len(micro) >= end:
                    break
                micro.append(batch)
                if len(micro) < args.grad_accum:
                    continue
                lr = self.set_lr()
                loss = self.train_step(micro)
                self.micro_in_epoch += len(micro)
                micro = []
                self.step += 1
                self.samples += global_batch
                self.loss_sum.add_(loss)
                self.loss_n += 1
                if self.rank == 0 and self.step % args.log_every == 0:
                    print(f"step {self.step} epoch {self.epoch} loss {loss.item():.4f} lr {lr:.5f}", flush=True)
                if self.step % args.checkpoint_every == 0:
                    self.save("every")
                if self.ctx.preemption.agreed(self.step):
                    if self.ckpt is not None:
                        self.ckpt.wait()
                        self.save("SIGTERM", block=True)
                    log.warning("stopped at step %d after checkpointing; a restart resumes here", self.step)
                    return EXIT_PREEMPTED
                if args.max_steps and self.step >= args.max_steps:
                    break
            self.loop_seconds += time.perf_counter() - t_epoch
            self.loop_cpu_seconds += time.process_time() - c_epoch
            if args.max_steps and self.step >= args.max_steps and self.micro_in_epoch < end:
                break
            val_loss, val_acc = self.evaluate()
            t = torch.tensor([(self.loss_sum / max(1, self.loss_n)).item()], dtype=torch.float64, device=self.device)
            train_loss = self.ctx.all_reduce_sum(t).item() / self.world
            self.curves.append(
                {
                    "step": self.step,
                    "epoch": self.epoch,
                    "train_loss": train_loss,
                    "val_loss": val_loss,
                    "val_accuracy": val_acc,
                    "lr": self.opt.param_groups[0]["lr"],
                    "samples": self.samples,
                }
            )
            if self.rank == 0:
                print(
                    f"epoch {self.epoch} step {self.step} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                    f"val_accuracy {val_acc:.4f}",
                    flush=True,
                )
            self.epoch += 1
            self.micro_in_epoch = 0
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            self.loss_n = 0
        self.steps_run = self.step - first_step
        if self.rank == 0:
            log.info(
                "training done at step %d (%d steps in %.2fs of step loops: %.1f steps/s)",
                self.step,
                self.steps_run,
                self.loop_seconds,
                self.steps_run / max(self.loop_seconds, 1e-9),
            )
        if self.ckpt is not None:
            self.ckpt.wait()
            self.save("final", block=True)
            self.ckpt.prune()
        if self.rank == 0:
            self.publish()
        self.ctx.barrier()
        return 0

    def example_input(self) -> Any:
        loader = self.val_loader or self.train_loader
        for x, _ in loader.epoch(0):
            return x[:2].to(self.device)
        raise TrainerError("no example batch to export the model with")

    def publish(self) -> None:
        from trainer import registry

        last = self.curves[-1] if self.curves else {}
        metrics = {
            "val_accuracy": last.get("val_accuracy"),
            "val_loss": last.get("val_loss"),
            "train_loss": last.get("train_loss"),
            "steps": self.step,
            "epochs": self.epoch,
            "samples": self.samples,
            "promotion_metric": self.args.metric,
            "promotion_mode": METRICS[self.args.metric],
        }
        lineage = {
            "data": self.manifest.lineage(),
            "job_name": self.args.job_name,
            "job_kind": os.environ.get("JOB_KIND", ""),
            **registry.image_lineage(),
            "code_version": __version__,
            "hyperparameters": self.hp(),
            "started_at": self.started_at,
            "ended_at": registry.now(),
            "world_size": self.world,
            "launch_mode": self.ctx.dist.mode,
            "backend": self.backend,
            "device": str(self.device),
            "precision": self.args.precision,
            "tf32": self.tf32,
            "torch": self.torch.__version__,
            "resumed_from_steps": self.resumes,
            "checkpoint_uri": self.args.checkpoint_uri or None,
        }
        files, export = registry.torch_files(self.net, self.example_input())
        lineage["export"] = export
        if not export["ok"] and self.args.require_export:
            raise TrainerError(f"torch.export failed and --require-export is set: {export['error']}")
        if self.registry is None:
            log.warning("no OUTPUT_URI: the model is not published (metrics %s)", metrics)
            return
        uri = self.registry.publish(self.version, files, metrics, lineage, self.curves)
        value = metrics[self.args.metric]
        try:
            promo = self.registry.promote(
                self.version, self.args.metric, math.nan if value is None else value, METRICS[self.args.metric]
            )
        except TrainerError as exc:  # published, not promoted: the run itself succeeded
            log.error("%s", exc)  # noqa: TRY400 - an expected refusal with its message, not a crash
            return
        log.info("published %s; LATEST %s %s", uri, "->" if promo.promoted else "stays at", promo.latest.get("version"))

    def close(self) -> None:
        for ld in (self.train_loader, self.val_loader):
            if ld is not None:
                ld.close()
        if self.ckpt is not None:
            self.ckpt.close()
        self.ctx.close()


def run(argv: list[str]) -> int:
    args = parse_args(argv)  # exits 2 with a one-line message on a bad value
    trainer = Trainer(args)
    try:
        return trainer.train()
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s " + f"[rank {os.environ.get('RANK', '0')}] %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("google").setLevel(logging.WARNING)
    parse_args(argv)  # bad flags: exit 2 here, before torch or torchrun start
    try:
        code = launch.relaunch_if_needed(["-m", "trainer.train"], argv)
    except TrainerError as exc:
        print(f"python -m trainer.train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if code is not None:
        return code
    code = launch.exit_code(lambda: run(argv), "python -m trainer.train")
    launch.record_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
