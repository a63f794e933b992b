"""MultiWorkerMirroredStrategy training for TFJobs: ``python -m tf_trainer.train [--name=value …]``.

Shares with the PyTorch trainer (package ``trainer``): the data set format and per-rank shard
reading (trainer.data), the atomic checkpoint store (trainer.checkpoint), and the registry layout
and LATEST promotion (trainer.registry). Reads TF_CONFIG (tf_trainer.tfconfig) for its rank.

Checkpoints: at the end of every epoch and on SIGTERM (checked between steps, agreed by all
workers with an all-reduce), the model and optimizer variables and the position (epoch, step) are
written through the same atomic store; a restart resumes from the latest complete one at that step
of that epoch. (Unlike the PyTorch trainer, TF's dropout RNG state is not captured, so a TF resume is
exact in data order and position but not bitwise in weights.)

Exit codes as trainer.train (trainer.exitcodes): 0, 1 bug, 2 bad input (no traceback), 138 transient
infrastructure failure, 143 stopped by SIGTERM after a checkpoint.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import signal
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from trainer import data, registry
from trainer.gcs import TrainerError
from trainer.train import add_storage_arguments, ranged, version_name

from tf_trainer import tfconfig

log = logging.getLogger("trainer")
METRICS = {"val_accuracy": "max", "val_loss": "min"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tf_trainer.train",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="MultiWorkerMirroredStrategy training with GCS data and the model registry.",
    )
    p.add_argument("--lr", type=ranged(float, 0, 10, lo_open=True), default=0.001, help="learning rate (Adam)")
    p.add_argument("--epochs", type=ranged(int, 1, 100000), default=5, help="passes over the training split")
    p.add_argument("--batch-size", type=ranged(int, 1, 1 << 20), default=64, help="examples per step per worker")
    p.add_argument("--hidden", type=ranged(int, 1, 1 << 16), default=128, help="hidden width of the default model")
    p.add_argument("--dropout", type=ranged(float, 0, 1, hi_open=True), default=0.1, help="dropout rate")
    p.add_argument("--seed", type=ranged(int, 0, 2**31 - 1), default=0, help="seed for init and data order")
    p.add_argument("--stop-check-every", type=ranged(int, 1), default=10, help="steps between SIGTERM checks")
    p.add_argument("--metric", choices=sorted(METRICS), default="val_accuracy", help="promotion metric")
    p.add_argument(
        "--model-version", type=version_name, default=None, help="registry version (default: UTC start time)"
    )
    add_storage_arguments(p, checkpoint_help="checkpoint prefix; unset: no checkpoints")
    return p


def _tar_dir(path: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(Path(path).rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(path)))
    return buf.getvalue()


def _untar(data_: bytes, path: str) -> None:
    with tarfile.open(fileobj=io.BytesIO(data_), mode="r") as tar:
        tar.extractall(path, filter="data")


def run(args: argparse.Namespace, task: tfconfig.Task) -> int:
    from trainer import checkpoint

    started = registry.now()
    # Input checks before TensorFlow starts anything.
    if args.data_uri:
        manifest = data.read_manifest(args.data_uri)
        blobs = None
    else:
        arrays, classes = data.synthetic(seed=args.seed)
        manifest, blobs = data.in_memory(arrays, classes)
    reg = registry.Registry(args.output_uri) if args.output_uri else None
    store = checkpoint.CheckpointStore(args.checkpoint_uri) if args.checkpoint_uri else None
    reader = data.ShardReader(manifest, "train", task.rank, task.world_size, args.batch_size, args.seed, blobs=blobs)
    val = (
        data.ShardReader(
            manifest, "val", task.rank, task.world_size, 256, args.seed, shuffle=False, blobs=blobs, drop_last=False
        )
        if "val" in manifest.splits
        else None
    )
    steps = [reader.steps_per_epoch(e) for e in range(args.epochs)]
    if min(steps) < 1:
        raise TrainerError(f"--batch-size={args.batch_size} is larger than one worker's share of {manifest.uri}")

    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy() if task.world_size > 1 else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    tf.keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input((manifest.input_dim,)),
                tf.keras.layers.Dense(args.hidden, activation="relu"),
                tf.keras.layers.Dropout(args.dropout),
                tf.keras.layers.Dense(args.hidden, activation="relu"),
                tf.keras.layers.Dropout(args.dropout),
                tf.keras.layers.Dense(manifest.num_classes),
            ]
        )
        opt = tf.keras.optimizers.Adam(args.lr)
        opt.build(model.trainable_variables)
        position = tf.Variable([0, 0, 0], dtype=tf.int64, trainable=False)  # epoch, step in epoch, global step
        ckpt = tf.train.Checkpoint(model=model, optimizer=opt, position=position)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")
    # Installed after the strategy has started its gRPC server, which replaces the SIGTERM handler.
    stop = {"set": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(set=True))

    @tf.function  # type: ignore[untyped-decorator]  # tensorflow has no type hints
    def train_step(x: Any, y: Any) -> Any:
        def step(x: Any, y: Any) -> Any:
            with tf.GradientTape() as tape:
                per_example = loss_fn(y, model(x, training=True))
                loss = tf.reduce_sum(per_example) / tf.cast(tf.shape(x)[0] * replicas, tf.float32)
            grads = tape.gradient(loss, model.trainable_variables)
            opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return loss

        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(step, args=(x, y)), axis=None)

    @tf.function  # type: ignore[untyped-decorator]  # tensorflow has no type hints
    def all_sum(t: Any) -> Any:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(t,)), axis=None)

    def save(reason: str) -> None:
        if store is None:
            return
        # Every worker writes (variables may need collectives); only the chief uploads.
        with tempfile.TemporaryDirectory() as d:
            ckpt.write(str(Path(d) / "ckpt"))
            if task.is_chief:
                meta = json.dumps(
                    {"step": int(position[2]), "curves": curves, "version": version, "started_at": started}
                ).encode()
                store.write(int(position[2]), checkpoint.seal(meta + b"\n" + _tar_dir(d)))
                store.prune()
                log.info("checkpoint step %d (%s)", int(position[2]), reason)

    curves: list[dict[str, Any]] = []
    version = args.model_version or time.strftime("v%Y%m%dT%H%M%SZ", time.gmtime())
    if store is not None:
        for s in store.steps():
            try:
                raw = checkpoint.unseal(store.read(s))
            except checkpoint.CorruptCheckpoint as exc:
                log.warning("skipping checkpoint step %d: %s", s, exc)
                continue
            meta_raw, _, tar = raw.partition(b"\n")
            meta = json.loads(meta_raw)
            with tempfile.TemporaryDirectory() as d:
                _untar(tar, d)
                ckpt.read(str(Path(d) / "ckpt")).expect_partial()
            curves, version, started = meta["curves"], meta["version"], meta["started_at"]
            log.info("resumed from checkpoint step %d", s)
            break

    while int(position[0]) < args.epochs:
        epoch, first = int(position[0]), int(position[1])
        loss_sum, n = 0.0, 0
        for batch in reader.epoch(epoch, first):
            loss = train_step(tf.constant(batch["x"]), tf.constant(batch["y"]))
            position.assign_add([0, 1, 1])
            loss_sum, n = loss_sum + float(loss), n + 1
            if int(position[2]) % args.stop_check_every == 0 and (
                float(all_sum(tf.constant([1.0 if stop["set"] else 0.0]))[0]) > 0
            ):
                save("SIGTERM")
                return 143
        sums = np.zeros(3)
        if val is not None:
            for batch in val.epoch(0):
                logits = model(tf.constant(batch["x"]), training=False)
                sums += [
                    float(tf.reduce_sum(loss_fn(batch["y"], logits))),
                    float(np.sum(np.argmax(logits, 1) == batch["y"])),
                    len(batch["y"]),
                ]
        sums = all_sum(tf.constant(sums, dtype=tf.float64)).numpy() if task.world_size > 1 else sums
        train_loss = (
            float(all_sum(tf.constant([loss_sum / max(1, n)]))[0]) / task.world_size
            if task.world_size > 1
            else loss_sum / max(1, n)
        )
        row = {
            "step": int(position[2]),
            "epoch": epoch,
            "train_loss": train_loss,
            "val_loss": sums[0] / max(1, sums[2]),
            "val_accuracy": sums[1] / max(1, sums[2]),
            "lr": args.lr,
        }
        curves.append(row)
        if task.is_chief:
            print(
                f"epoch {epoch} step {row['step']} train_loss {train_loss:.4f} val_loss {row['val_loss']:.4f} "
                f"val_accuracy {row['val_accuracy']:.4f}",
                flush=True,
            )
        position.assign([epoch + 1, 0, int(position[2])])
        save("epoch")

    # Every worker saves (collectives); the chief publishes.
    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "model.keras")
        model.save(path)
        if task.is_chief and reg is not None:
            last = curves[-1]
            metrics = {
                "val_accuracy": last["val_accuracy"],
                "val_loss": last["val_loss"],
                "train_loss": last["train_loss"],
                "steps": int(position[2]),
                "epochs": args.epochs,
                "promotion_metric": args.metric,
                "promotion_mode": METRICS[args.metric],
            }
            hp = {k: v for k, v in vars(args).items() if k not in ("data_uri", "output_uri", "checkpoint_uri")}
            lineage = {
                "data": manifest.lineage(),
                "job_name": args.job_name,
                "image": os.environ.get("TRAINER_IMAGE", ""),
                "code_version": "tf_trainer 0.1.0",
                "git_sha": os.environ.get("TRAINER_GIT_SHA", ""),
                "hyperparameters": hp,
                "started_at": started,
                "ended_at": registry.now(),
                "world_size": task.world_size,
                "launch_mode": "tf_config" if task.cluster else "single",
                "tensorflow": tf.__version__,
            }
            uri = reg.publish(version, {"model.keras": Path(path).read_bytes()}, metrics, lineage, curves)
            value = metrics[args.metric]
            promo = reg.promote(version, args.metric, math.nan if value is None else value, METRICS[args.metric])
            log.info(
                "published %s; LATEST %s %s", uri, "->" if promo.promoted else "stays at", promo.latest.get("version")
            )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("google").setLevel(logging.WARNING)
    from trainer import launch

    # The exit-code contract of trainer.exitcodes: 2 bad input, 138 transient, 143 preempted, 1 bug.
    return launch.exit_code(lambda: run(args, tfconfig.from_env()), "python -m tf_trainer.train")


if __name__ == "__main__":
    sys.exit(main())
