"""Batch prediction benchmark (CPU, fake-gcs-server on loopback): docs/benchmarks.md.

Predictions/s of ``trainer.predict`` (one index: read the inputs from fake GCS with prefetch threads,
batch on the device, write JSONL + .npz outputs with ifGenerationMatch=0, manifest) against a bare
``model(x)`` loop over the same examples already in memory as tensors: the same model (the same
torch.export program, loaded the same way), the same batch size, one process each, the same torch
threads, measured in the same run, alternating (bare, predictor, bare, predictor, …).

Two predictor figures: ``stream`` (the input → output pipeline, Predictor.run) and ``end to end``
(run_index: plan, model download and load, the pipeline, the completeness check and the manifest).

    .venv/bin/python bench/predict_bench.py [--model mlp|resnet] [--inputs 48] [--rows 512] [--dim 256]
        [--hidden 1024] [--batch-size 512] [--repeats 3] [--threads 2]

``--model mlp`` (default): an MLP on ``--dim`` features, the cheapest model per example, so the
predictor's fixed per-example work (softmax, JSON line, .npz) weighs most. ``--model resnet``: the
BYO example's ResNet-18 (examples/byo_resnet) on 3x32x32 images, an image classifier of the kind
batch prediction usually serves.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "images/trainer/src"))


def start_fake_gcs() -> tuple[subprocess.Popen[bytes], str]:
    from jobgen.emulators import fake_gcs_binary
    from jobgen.localcluster.procs import free_port

    port = free_port(set())
    host = f"http://127.0.0.1:{port}"
    root = tempfile.mkdtemp(prefix="bench-gcs-")
    proc = subprocess.Popen(
        [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port), "-public-host",
         f"127.0.0.1:{port}", "-external-url", host, "-backend", "filesystem", "-filesystem-root", root,
         "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{host}/storage/v1/b", timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, host


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=48)
    ap.add_argument("--rows", type=int, default=512, help="examples per input file")
    ap.add_argument("--dim", type=int, default=256, help="features per example")
    ap.add_argument("--model", choices=["mlp", "resnet"], default="mlp", help="the model both loops run")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden width of the MLP")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both loops)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (on a GPU machine: the CUDA path, unchanged)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    proc, host = start_fake_gcs()
    import os

    os.environ.update({"STORAGE_EMULATOR_HOST": host, "GOOGLE_CLOUD_PROJECT": "bench"})
    try:
        return run(args, proc.pid)
    finally:
        proc.terminate()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(args: argparse.Namespace, gcs_pid: int) -> int:
    import numpy as np
    import torch
    from trainer import gcs, predict
    from trainer.gcs import GcsUri
    from trainer.model import MLP
    from trainer.registry import Registry

    torch.set_num_threads(args.threads)
    client = gcs.client()
    for name in ("bench-in", "bench-models", "bench-out"):
        client.create_bucket(name)
    torch.manual_seed(0)
    shape: tuple[int, ...]
    if args.model == "resnet":
        sys.path.insert(0, str(REPO / "examples/byo_resnet"))
        import train as byo  # examples/byo_resnet/train.py

        net = byo.resnet18(args.classes).eval()
        shape = (3, 32, 32)
    else:
        net = MLP(args.dim, args.classes, hidden=args.hidden, dropout=0.0).eval()
        shape = (args.dim,)
    program = torch.export.export(
        net, (torch.zeros(8, *shape),), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}
    )
    buf = io.BytesIO()
    torch.export.save(program, buf)
    reg = Registry("gs://bench-models/m")
    reg.publish("v1", {"model.pt2": buf.getvalue()}, {"val_accuracy": 0.5}, {"job_name": "bench"}, [])
    reg.promote("v1", "val_accuracy", 0.5)

    rng = np.random.default_rng(0)
    arrays = []
    for i in range(args.inputs):
        x = rng.normal(size=(args.rows, *shape)).astype(np.float32)
        arrays.append(x)
        npy = io.BytesIO()
        np.save(npy, x)
        client.bucket("bench-in").blob(f"batch/in-{i:04d}.npy").upload_from_string(npy.getvalue())
    examples = args.inputs * args.rows

    # The bare loop: the same program (as the predictor loads it), batches of the same size, tensors in memory.
    device = torch.device(args.device)
    model = predict.load_model(predict.resolve_model("gs://bench-models/m", "LATEST"), device)
    data = torch.from_numpy(np.concatenate(arrays)).to(device)
    batches = list(torch.split(data, args.batch_size))

    def bare() -> tuple[float, float]:
        cpu = time.process_time()
        start = time.perf_counter()
        with torch.inference_mode():
            for xb in batches:
                out = model.fn(xb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        assert out.shape[1] == args.classes
        wall = time.perf_counter() - start
        return examples / wall, (time.process_time() - cpu) / examples * 1e6

    def predictor(rep: int) -> tuple[float, float, float, float]:
        cfg = predict.Config(
            input=GcsUri("bench-in", "batch"), glob="*.npy", model="gs://bench-models/m", model_version="LATEST",
            output=GcsUri("bench-out", f"run-{rep}"), index=0, completions=1, batch_size=args.batch_size,
            device=args.device,
        )  # fmt: skip
        cpu, gcs_cpu = time.process_time(), cpu_seconds(gcs_pid)
        start = time.perf_counter()
        stats = predict.run_index(cfg)
        total = time.perf_counter() - start
        cpu, gcs_cpu = time.process_time() - cpu, cpu_seconds(gcs_pid) - gcs_cpu
        assert stats.examples == examples and stats.predicted == args.inputs, stats
        return examples / stats.seconds, examples / total, cpu / examples * 1e6, gcs_cpu / examples * 1e6

    bare()  # warm-up (allocator, first-call overheads) for both
    predictor(-1)
    rows: list[dict[str, float]] = []
    for rep in range(args.repeats):
        b, b_cpu = bare()
        stream, e2e, p_cpu, g_cpu = predictor(rep)
        rows.append({"bare": b, "stream": stream, "end_to_end": e2e, "bare_cpu_ms": b_cpu, "predictor_cpu_ms": p_cpu,
                     "fake_gcs_cpu_ms": g_cpu})  # fmt: skip
        print(
            f"repeat {rep}: bare {b:,.0f}/s  predictor stream {stream:,.0f}/s ({stream / b:.2f}x)  "
            f"end to end {e2e:,.0f}/s ({e2e / b:.2f}x)  CPU ms per 1k predictions: bare {b_cpu:.0f}, "
            f"predictor {p_cpu:.0f} (+ fake-gcs-server {g_cpu:.0f})",
            flush=True,
        )
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratios = [r["stream"] / r["bare"] for r in rows]
    e2e_ratios = [r["end_to_end"] / r["bare"] for r in rows]
    mb = args.inputs * args.rows * int(np.prod(shape)) * 4 / 1e6
    print(
        f"\n{args.inputs} inputs x {args.rows} examples x {list(shape)} ({mb:.0f} MB float32), "
        f"{'ResNet-18' if args.model == 'resnet' else f'MLP hidden {args.hidden}'}, batch {args.batch_size}, "
        f"{args.device}, torch threads {args.threads}, "
        f"{args.repeats} repeats"
    )
    print(
        f"median: bare {med['bare']:,.0f} predictions/s; predictor stream {med['stream']:,.0f}/s "
        f"= {statistics.median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x); "
        f"end to end {med['end_to_end']:,.0f}/s = {statistics.median(e2e_ratios):.2f}x"
    )
    print(
        f"CPU per 1k predictions (all threads of this process): bare {med['bare_cpu_ms']:.0f} ms, predictor "
        f"{med['predictor_cpu_ms']:.0f} ms (bare/predictor = {med['bare_cpu_ms'] / med['predictor_cpu_ms']:.2f}x); "
        f"fake-gcs-server, i.e. GCS's side: {med['fake_gcs_cpu_ms']:.0f} ms"
    )
    if args.json:
        print(json.dumps({"args": vars(args), "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
