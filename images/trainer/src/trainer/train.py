"""Distributed data-parallel training: ``python -m trainer.train [--name=value …]``.

Reads ``DATA_URI``/``OUTPUT_URI``/``CHECKPOINT_URI`` (or the flags of the same name), the
training-operator's env contract (trainer.env), trains with DDP, checkpoints every N steps and on
SIGTERM, resumes from the latest complete checkpoint, and publishes to the model registry
(rank 0 only). ``--help`` lists every hyperparameter with its default.

Exit codes: 0 done; 2 bad input (hyperparameters, URIs, data set), message on stderr, no traceback;
143 stopped by SIGTERM after writing a checkpoint (a restart resumes from it).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import re
import signal
import socket
import sys
import time
from typing import Any

import numpy as np

from trainer import __version__, env
from trainer.gcs import GcsUri, TrainerError

log = logging.getLogger("trainer")

EXIT_USAGE = 2
EXIT_PREEMPTED = 143
METRICS = {"val_accuracy": "max", "val_loss": "min"}


# ---------------------------------------------------------------------------------------------
# Hyperparameters: validated by argparse, before torch is even imported.


def _ranged(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False):  # type: ignore[no-untyped-def]
    def parse(text: str):  # type: ignore[no-untyped-def]
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
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


def _gs(what: str):  # type: ignore[no-untyped-def]
    def parse(text: str) -> str:
        if text == "":
            return ""
        try:
            GcsUri.parse(text, what)
        except TrainerError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    return parse


def _version(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", text):
        raise argparse.ArgumentTypeError(f"must be 1-128 characters of A-Z a-z 0-9 . _ -, got {text!r}")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m trainer.train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="DDP training with GCS data, exact checkpoint/resume and a versioned model registry.")
    h = p.add_argument_group("hyperparameters")
    h.add_argument("--lr", type=_ranged(float, 0, 10, lo_open=True), default=0.05, help="peak learning rate (SGD)")
    h.add_argument("--epochs", type=_ranged(int, 1, 100000), default=2, help="passes over the training split")
    h.add_argument("--batch-size", type=_ranged(int, 1, 1 << 20), default=64, help="examples per step per process")
    h.add_argument("--momentum", type=_ranged(float, 0, 1, hi_open=True), default=0.9, help="SGD momentum")
    h.add_argument("--weight-decay", type=_ranged(float, 0, 1), default=0.0, help="L2 penalty")
    h.add_argument("--scheduler", choices=["cosine", "constant", "step"], default="cosine",
                   help="LR schedule over all steps (step: x0.1 at 1/2 and 3/4)")
    h.add_argument("--hidden", type=_ranged(int, 1, 1 << 16), default=128, help="hidden width of the default model")
    h.add_argument("--dropout", type=_ranged(float, 0, 1, hi_open=True), default=0.1, help="dropout of the default model")
    h.add_argument("--seed", type=_ranged(int, 0, 2**32 - 1), default=0, help="seed for init, data order and dropout")
    h.add_argument("--max-steps", type=_ranged(int, 0), default=0, help="stop after this many steps (0: no limit)")
    r = p.add_argument_group("runtime")
    r.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto",
                   help="torch.distributed backend (auto: nccl with GPUs, else gloo)")
    r.add_argument("--checkpoint-every", type=_ranged(int, 1), default=200, help="steps between checkpoints")
    r.add_argument("--keep-checkpoints", type=_ranged(int, 1), default=3, help="checkpoints kept in CHECKPOINT_URI")
    r.add_argument("--stop-check-every", type=_ranged(int, 1), default=10,
                   help="steps between checks (one all-reduce) for a SIGTERM on any rank")
    r.add_argument("--log-every", type=_ranged(int, 1), default=50, help="steps between loss log lines")
    r.add_argument("--model", type=_hook, default="trainer.model:default_model",
                   help="model hook module:function(input_dim, num_classes, args) -> nn.Module")
    r.add_argument("--batch-fn", type=_hook, default="trainer.model:default_batch",
                   help="batch hook module:function(dict of numpy arrays) -> (inputs, targets)")
    r.add_argument("--metric", choices=sorted(METRICS), default="val_accuracy",
                   help="metric that decides promotion to LATEST (val_accuracy: higher wins; val_loss: lower)")
    r.add_argument("--model-version", type=_version, default=None,
                   help="registry version (default: UTC start time, kept across resumes)")
    r.add_argument("--job-name", default=os.environ.get("JOB_NAME") or _job_from_hostname(),
                   help="job name for lineage (default: $JOB_NAME, or the pod hostname minus -master-N/-worker-N)")
    s = p.add_argument_group("storage (default: the environment variables jobgen sets)")
    s.add_argument("--data-uri", type=_gs("DATA_URI"), default=os.environ.get("DATA_URI", ""),
                   help="data set prefix (manifest.json); unset: the built-in generated data set")
    s.add_argument("--output-uri", type=_gs("OUTPUT_URI"), default=os.environ.get("OUTPUT_URI", ""),
                   help="registry root gs://<models>/<model>; unset: nothing is published")
    s.add_argument("--checkpoint-uri", type=_gs("CHECKPOINT_URI"), default=os.environ.get("CHECKPOINT_URI", ""),
                   help="checkpoint prefix; unset: no checkpoints, no resume")
    return p


def _job_from_hostname() -> str:
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return re.sub(r"-(master|worker)-\d+$", "", host)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.output_uri:
        try:
            GcsUri.parse(args.output_uri).path or p.error(
                f"argument --output-uri: must be gs://<models>/<model>, got {args.output_uri!r}")
        except TrainerError as exc:
            p.error(str(exc))
    return args


# ---------------------------------------------------------------------------------------------
# Training


class StopFlag:
    """Set by SIGTERM (GKE spot preemption gives ~30 s); polled between steps."""

    def __init__(self) -> None:
        self.set = False
        self.signum: int | None = None

    def install(self) -> None:
        def handler(signum: int, _frame: Any) -> None:
            self.set, self.signum = True, signum
            log.warning("received signal %d: will checkpoint and stop at the next check", signum)

        signal.signal(signal.SIGTERM, handler)


def _rng_state() -> dict[str, Any]:
    import torch

    npst = np.random.get_state()
    st: dict[str, Any] = {"python": random.getstate(),
                          "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
                          "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    import torch

    py = st["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = st["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state(st["cuda"])


def _lr_lambda(kind: str, total: int):  # type: ignore[no-untyped-def]
    total = max(1, total)
    if kind == "cosine":
        return lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / total))
    if kind == "step":
        return lambda s: 0.01 if s >= 0.75 * total else (0.1 if s >= 0.5 * total else 1.0)
    return lambda s: 1.0


class Trainer:
    def __init__(self, args: argparse.Namespace, dist: env.DistEnv,
                 dataset: tuple[Any, dict[str, bytes] | None] | None = None) -> None:
        """``dataset``: an in-memory (manifest, shard bytes) pair instead of DATA_URI (benchmarks)."""
        import torch

        from trainer import checkpoint, data, registry

        self.args, self.dist = args, dist
        self.rank, self.world = dist.rank, dist.world_size
        self.torch = torch
        self.stop = StopFlag()
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
        self.train_reader = data.ShardReader(self.manifest, "train", self.rank, self.world, args.batch_size,
                                             args.seed, shuffle=True, blobs=blobs)
        self.val_reader = (data.ShardReader(self.manifest, "val", self.rank, self.world, 256, args.seed, shuffle=False,
                                            blobs=blobs, drop_last=False)
                           if "val" in self.manifest.splits else None)
        self.steps_per_epoch = [self.train_reader.steps_per_epoch(e) for e in range(args.epochs)]
        if min(self.steps_per_epoch) < 1:
            raise TrainerError(f"--batch-size={args.batch_size} is larger than one rank's share of the training "
                               f"split ({self.manifest.uri}) with {self.world} processes")
        self.total_steps = sum(self.steps_per_epoch)
        if args.max_steps:
            self.total_steps = min(self.total_steps, args.max_steps)
        self.store = checkpoint.CheckpointStore(args.checkpoint_uri, args.keep_checkpoints) if args.checkpoint_uri else None
        self.registry = registry.Registry(args.output_uri) if args.output_uri else None

        backend = args.backend
        if backend == "auto":
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl" and not torch.cuda.is_available():
            raise TrainerError("--backend=nccl needs a GPU; use --backend=gloo on CPU")
        self.backend = backend
        self.device = torch.device(f"cuda:{dist.local_rank}" if backend == "nccl" else "cpu")
        if backend == "nccl":
            torch.cuda.set_device(self.device)

        torch.manual_seed(args.seed)  # identical initial weights on every rank
        net = self.model_fn(self.manifest.input_dim, self.manifest.num_classes, args)
        if not isinstance(net, torch.nn.Module):
            raise TrainerError(f"--model {args.model} returned {type(net).__name__}, not a torch.nn.Module")
        self.net = net.to(self.device)
        random.seed(args.seed + self.rank)
        np.random.seed(args.seed + self.rank)
        torch.manual_seed(args.seed + 1 + self.rank)  # per-rank dropout

        if self.world > 1 or dist.mode == "torchrun":
            import torch.distributed as tdist

            if not tdist.is_initialized():
                tdist.init_process_group(backend, rank=self.rank, world_size=self.world,
                                         **({"device_id": self.device} if backend == "nccl" else {}))
            self.tdist = tdist
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.model = DDP(self.net, device_ids=[self.device.index] if backend == "nccl" else None)
        else:
            self.tdist = None
            self.model = self.net
        self.opt = torch.optim.SGD(self.model.parameters(), lr=args.lr, momentum=args.momentum,
                                   weight_decay=args.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, _lr_lambda(args.scheduler, self.total_steps))

        # Position and history (restored from a checkpoint when there is one).
        self.step, self.epoch, self.step_in_epoch = 0, 0, 0
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.loss_n = 0
        self.curves: list[dict[str, Any]] = []
        self.resumes: list[int] = []
        self.version = args.model_version or self._broadcast(time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime()))

    # -- collectives -------------------------------------------------------------------------

    def _broadcast(self, obj: Any) -> Any:
        if self.tdist is None:
            return obj
        box = [obj]
        self.tdist.broadcast_object_list(box, src=0)
        return box[0]

    def _gather(self, obj: Any) -> list[Any]:
        if self.tdist is None:
            return [obj]
        out: list[Any] = [None] * self.world
        self.tdist.all_gather_object(out, obj)
        return out

    def _stop_agreed(self) -> bool:
        if self.tdist is None:
            return self.stop.set
        flag = self.torch.tensor([1 if self.stop.set else 0], dtype=self.torch.int32, device=self.device)
        self.tdist.all_reduce(flag, op=self.tdist.ReduceOp.MAX)
        return bool(flag.item())

    def _barrier(self) -> None:
        if self.tdist is not None:
            self.tdist.barrier()

    # -- checkpoints -------------------------------------------------------------------------

    def state(self, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
        return {"format": 1, "step": self.step, "epoch": self.epoch, "step_in_epoch": self.step_in_epoch,
                "model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "ranks": per_rank, "world_size": self.world,
                "loss_n": self.loss_n, "curves": self.curves,
                "version": self.version, "started_at": self.started_at, "resumes": self.resumes,
                "data": self.manifest.lineage()}

    def save(self, reason: str) -> float:
        """Every rank contributes its RNG state; rank 0 writes. Returns seconds taken."""
        if self.store is None:
            return 0.0
        from trainer import checkpoint

        t0 = time.perf_counter()
        # Per-rank parts: RNG streams (dropout differs by rank) and this rank's running loss sum.
        per_rank = self._gather({"rng": _rng_state(), "loss_sum": self.loss_sum.item()})
        if self.rank == 0:
            saved = self.store.write(self.step, checkpoint.serialize(self.state(per_rank)))
            self.store.prune()
            log.info("checkpoint %s (%s, %.1f KiB, %.2fs)", saved.uri, reason, saved.size / 1024,
                     time.perf_counter() - t0)
        self._barrier()
        return time.perf_counter() - t0

    def restore(self) -> bool:
        if self.store is None:
            return False
        found = self.store.latest() if self.rank == 0 else None
        # Rank 0 decides which checkpoint; every rank then loads that one.
        step = self._broadcast(found[0] if found else -1)
        if step < 0:
            return False
        from trainer import checkpoint

        st = found[1] if found else checkpoint.deserialize(self.store.read(step))
        if st["data"] != self.manifest.lineage():
            log.warning("the data set changed since checkpoint %d (%s): resuming on the new version", step,
                        self.manifest.uri)
        self.net.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.sched.load_state_dict(st["scheduler"])
        torch = self.torch
        if st["world_size"] == self.world:
            mine = st["ranks"][self.rank]
            _set_rng_state(mine["rng"])
            self.loss_sum = torch.tensor(mine["loss_sum"], dtype=torch.float64, device=self.device)
        else:
            log.warning("world size changed %d → %d: RNG streams reseeded (resume is not bitwise exact)",
                        st["world_size"], self.world)
            self.torch.manual_seed(self.args.seed + 1 + self.rank + 1000 * step)
            mean = sum(r["loss_sum"] for r in st["ranks"]) / len(st["ranks"])
            self.loss_sum = torch.tensor(mean, dtype=torch.float64, device=self.device)
        self.step, self.epoch, self.step_in_epoch = st["step"], st["epoch"], st["step_in_epoch"]
        self.loss_n = st["loss_n"]
        self.curves, self.version, self.started_at = st["curves"], st["version"], st["started_at"]
        self.resumes = [*st["resumes"], step]
        if self.rank == 0:
            log.info("resumed from checkpoint step %d (epoch %d, batch %d)", step, self.epoch, self.step_in_epoch)
        return True

    # -- loop --------------------------------------------------------------------------------

    def evaluate(self) -> tuple[float, float]:
        torch = self.torch
        if self.val_reader is None:
            return math.nan, math.nan
        self.model.eval()
        sums = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss*n, correct, n
        with torch.no_grad():
            for batch in self.val_reader.epoch(0):
                x, y = self.batch_fn(batch)
                x, y = x.to(self.device), y.to(self.device)
                out = self.net(x)
                sums[0] += torch.nn.functional.cross_entropy(out, y, reduction="sum").double()
                sums[1] += (out.argmax(1) == y).sum().double()
                sums[2] += len(y)
        if self.tdist is not None:
            self.tdist.all_reduce(sums)
        self.model.train()
        n = max(1.0, sums[2].item())
        return sums[0].item() / n, sums[1].item() / n

    def train(self) -> int:
        torch, args = self.torch, self.args
        F = torch.nn.functional
        self.stop.install()
        self.restore()
        if self.rank == 0:
            log.info("training %s: %d processes (%s, %s), %d steps from step %d", self.manifest.uri, self.world,
                     self.dist.mode, self.backend, self.total_steps, self.step)
        self.model.train()
        # Wall and CPU time (this process, all threads) in the step loops, not in eval/publish.
        self.loop_seconds, self.loop_cpu_seconds, first_step = 0.0, 0.0, self.step
        while self.epoch < args.epochs and self.step < self.total_steps:
            t_epoch, c_epoch = time.perf_counter(), time.process_time()
            for batch in self.train_reader.epoch(self.epoch, self.step_in_epoch):
                x, y = self.batch_fn(batch)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                self.opt.zero_grad(set_to_none=True)
                loss = F.cross_entropy(self.model(x), y)
                loss.backward()
                self.opt.step()
                self.sched.step()
                self.step += 1
                self.step_in_epoch += 1
                self.loss_sum.add_(loss.detach())  # float64 accumulator, no per-step allocation
                self.loss_n += 1
                if self.rank == 0 and self.step % args.log_every == 0:
                    print(f"step {self.step} epoch {self.epoch} loss {loss.item():.4f} "
                          f"lr {self.sched.get_last_lr()[0]:.5f}", flush=True)
                if self.step % args.checkpoint_every == 0:
                    self.save("every")
                if self.step % args.stop_check_every == 0 and self._stop_agreed():
                    self.save("SIGTERM")
                    log.warning("stopped at step %d after checkpointing; a restart resumes here", self.step)
                    return EXIT_PREEMPTED
                if self.step >= self.total_steps:
                    break
            self.loop_seconds += time.perf_counter() - t_epoch
            self.loop_cpu_seconds += time.process_time() - c_epoch
            val_loss, val_acc = self.evaluate()
            train_loss = (self.loss_sum / max(1, self.loss_n)).item()
            if self.tdist is not None:
                t = torch.tensor([train_loss], dtype=torch.float64, device=self.device)
                self.tdist.all_reduce(t)
                train_loss = t.item() / self.world
            self.curves.append({"step": self.step, "epoch": self.epoch, "train_loss": train_loss,
                                "val_loss": val_loss, "val_accuracy": val_acc, "lr": self.sched.get_last_lr()[0]})
            if self.rank == 0:
                print(f"epoch {self.epoch} step {self.step} train_loss {train_loss:.4f} val_loss {val_loss:.4f} "
                      f"val_accuracy {val_acc:.4f}", flush=True)
            self.epoch += 1
            self.step_in_epoch = 0
            self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            self.loss_n = 0
        self.steps_run = self.step - first_step
        if self.rank == 0:
            log.info("training done at step %d (%d steps in %.2fs of step loops: %.1f steps/s)", self.step,
                     self.steps_run, self.loop_seconds, self.steps_run / max(self.loop_seconds, 1e-9))
        self.save("final")
        if self.rank == 0:
            self.publish()
        self._barrier()
        return 0

    def publish(self) -> None:
        import io

        from trainer import model as model_mod, registry

        torch = self.torch
        last = self.curves[-1] if self.curves else {}
        metrics = {"val_accuracy": last.get("val_accuracy"), "val_loss": last.get("val_loss"),
                   "train_loss": last.get("train_loss"), "steps": self.step, "epochs": self.epoch,
                   "promotion_metric": self.args.metric, "promotion_mode": METRICS[self.args.metric]}
        hp = {k: v for k, v in vars(self.args).items() if k not in ("data_uri", "output_uri", "checkpoint_uri")}
        lineage = {"data": self.manifest.lineage(), "job_name": self.args.job_name,
                   "image": os.environ.get("TRAINER_IMAGE", ""), "code_version": __version__,
                   "git_sha": os.environ.get("TRAINER_GIT_SHA", ""), "hyperparameters": hp,
                   "started_at": self.started_at, "ended_at": registry.now(),
                   "world_size": self.world, "launch_mode": self.dist.mode, "backend": self.backend,
                   "torch": torch.__version__, "resumed_from_steps": self.resumes,
                   "checkpoint_uri": self.args.checkpoint_uri or None}
        buf = io.BytesIO()
        torch.save({k: v.cpu() for k, v in self.net.state_dict().items()}, buf)
        files = {"model.pt": buf.getvalue()}
        scripted = model_mod.torchscript(self.net)
        if scripted is not None:
            import warnings

            sbuf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still loadable
                torch.jit.save(scripted, sbuf)
            files["model.torchscript.pt"] = sbuf.getvalue()
        if self.registry is None:
            log.warning("no OUTPUT_URI: the model is not published (metrics %s)", metrics)
            return
        uri = self.registry.publish(self.version, files, metrics, lineage, self.curves)
        value = metrics[self.args.metric]
        promo = self.registry.promote(self.version, self.args.metric, math.nan if value is None else value,
                                      METRICS[self.args.metric])
        log.info("published %s; LATEST %s %s", uri, "->" if promo.promoted else "stays at",
                 promo.latest.get("version"))

    def close(self) -> None:
        if self.tdist is not None and self.tdist.is_initialized():
            self.tdist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)  # exits 2 with a one-line message on a bad value
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s " +
                        f"[rank {os.environ.get('RANK', '0')}] %(message)s", stream=sys.stderr)
    logging.getLogger("google").setLevel(logging.WARNING)
    try:
        dist = env.resolve()
        if dist.mode == "launch":
            cmd = env.torchrun_argv(dist, "trainer.train", argv)
            log.info("PET_NPROC_PER_NODE=%s: re-executing under torchrun: %s", dist.local_world_size, " ".join(cmd))
            sys.stdout.flush()
            sys.stderr.flush()
            os.execv(cmd[0], cmd)
        trainer = Trainer(args, dist)
    except TrainerError as exc:
        print(f"python -m trainer.train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trainer.train()
    except TrainerError as exc:
        print(f"python -m trainer.train: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        trainer.close()


if __name__ == "__main__":
    sys.exit(main())
