"""Benchmark of the retraining watcher against real parts (fake-gcs-server → Pub/Sub emulator →
`jobgen watch` process → local kube-apiserver + training-operator).

1. Latency: N data versions uploaded one at a time; event→job = from the upload call returning to the
   apiserver's ADDED watch event of the job. p50/p99.
2. Floor, same run, same clocks: upload → one synchronous Pub/Sub pull of the notification → one
   apiserver create of a pre-rendered job → ADDED. p50/p99.
3. Burst: 1,000 versions, each notification present 10 times (the real one + 9 republished with new
   message IDs), queued before the watcher starts. Jobs created (must be 1,000), duplicates (must
   be 0), total time, watcher peak RSS (VmHWM).

    .venv/bin/python bench/watcher_bench.py [--versions 1000] [--copies 10] [--latency 50]

Prints a Markdown table for docs/benchmarks.md. Jobs are suspended (runPolicy.suspend), so
the operator creates no pods: the benchmark measures the watcher, not kwok.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


class JobWatch:
    """ADDED times of PyTorchJobs in a namespace, from one watch stream."""

    def __init__(self, cluster, namespace: str) -> None:
        self.cluster, self.ns = cluster, namespace
        self.added: dict[str, float] = {}
        self.cond = threading.Condition()
        self.stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self.stop:
            try:
                for kind, obj in self.cluster.watch("kubeflow.org/v1", "PyTorchJob", self.ns, timeout_seconds=60):
                    if kind == "ADDED":
                        with self.cond:
                            self.added.setdefault(obj["metadata"]["name"], time.perf_counter())
                            self.cond.notify_all()
                    if self.stop:
                        break
            except Exception:
                time.sleep(0.2)

    def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.added) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--latency", type=int, default=50)
    args = ap.parse_args()

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import pubsub_v1, storage

    from jobgen import kube
    from jobgen.emulators import Emulators
    from jobgen.localcluster import LocalCluster
    from jobgen.render import render
    from jobgen.spec import JobSpec
    from jobgen.watcher.targets.kube import KubeAdapter

    work = Path(tempfile.mkdtemp(prefix="watcher-bench-"))
    emu = Emulators(work / "emulators")
    lc = LocalCluster(work / "cluster", context="watcher-bench", log=lambda m: None)
    procs: list[subprocess.Popen] = []
    try:
        t = time.perf_counter()
        info = emu.up()
        cinfo = lc.up()
        print(f"# emulators + local cluster up in {time.perf_counter() - t:.1f}s", file=sys.stderr)
        os.environ.update(info.env())
        gcs = storage.Client(project=info.project, credentials=AnonymousCredentials())
        pub, subr = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        topic = f"projects/{info.project}/topics/{info.topic}"
        ns = "bench"
        lc.kubectl(None, "create", "namespace", ns)
        cluster = kube.connect(None, cinfo.kubeconfig)
        adapter = KubeAdapter(cluster, ns)
        jw = JobWatch(cluster, ns)

        def sub(name: str) -> str:
            path = subr.subscription_path(info.project, name)
            subr.create_subscription(name=path, topic=topic, ack_deadline_seconds=10)
            return path

        spec_doc = yaml.safe_load((REPO / "jobs" / "cpu-ddp.yaml").read_text())
        spec_doc.update(namespace=ns, runPolicy={**spec_doc["runPolicy"], "suspend": True})
        (work / "job.yaml").write_text(yaml.safe_dump(spec_doc))

        def config(bucket: str, subscription: str) -> Path:
            state = f"state-{bucket}"
            gcs.create_bucket(state)
            cfg = {
                "namespace": ns,
                "state": {"bucket": state},
                "jobs": {"train": {"file": "job.yaml"}},
                "triggers": [
                    {"name": "data", "job": "train", "bucket": bucket, "prefix": "mnist/", "concurrency": "Allow"}
                ],
                "sources": {
                    "pubsub": {
                        "subscription": subscription,
                        "maxMessages": 500,
                        "threads": 16,
                        "leaseExtensionSeconds": 30,
                    }
                },
                "server": {"host": "127.0.0.1", "port": 0},
            }
            path = work / f"watcher-{bucket}.yaml"
            path.write_text(yaml.safe_dump(cfg))
            return path

        def start_watcher(cfg: Path) -> tuple[subprocess.Popen, Path]:
            port_file = work / f"port-{uuid.uuid4().hex[:6]}"
            log = open(work / f"{cfg.stem}.log", "ab")  # noqa: SIM115
            p = subprocess.Popen(
                [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(cfg), "--kubeconfig", cinfo.kubeconfig],
                env={**os.environ, "JOBGEN_WATCH_PORT_FILE": str(port_file)},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
            procs.append(p)
            return p, port_file

        def metrics(port_file: Path) -> dict[str, float]:
            import urllib.request

            port = int(port_file.read_text())
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            out: dict[str, float] = {}
            for line in text.splitlines():
                if line and not line.startswith("#"):
                    name = line.split("{")[0].split(" ")[0]
                    out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            return out

        def wait_ready(port_file: Path) -> None:
            import urllib.request

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    port = int(port_file.read_text())
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200:
                        return
                except (OSError, ValueError):
                    pass
                time.sleep(0.1)
            raise SystemExit("watcher not ready")

        # --- 2. floor: one pull + one create, same clocks -------------------------------------------------
        fb = f"floor-{uuid.uuid4().hex[:6]}"
        gcs.create_bucket(fb)
        fsub = sub(f"floor-{fb}")
        spec = JobSpec.model_validate(spec_doc)
        floor = []
        pull_t, create_t = [], []
        for i in range(args.latency):
            name = f"mnist/v{i:05d}/_SUCCESS"
            gcs.bucket(fb).blob(name).upload_from_string(b"")
            t0 = time.perf_counter()
            got = None
            while got is None:
                resp = subr.pull(subscription=fsub, max_messages=10, timeout=10)
                for m in resp.received_messages:
                    if m.message.attributes.get("objectId") == name:
                        got = m
                if resp.received_messages:
                    subr.acknowledge(subscription=fsub, ack_ids=[m.ack_id for m in resp.received_messages])
            t1 = time.perf_counter()
            manifest = render(spec.model_copy(update={"name": f"floor-{i}"}), {})
            t2 = time.perf_counter()
            adapter.create_job(manifest)
            t3 = time.perf_counter()
            floor.append((t1 - t0) + (t3 - t2))
            pull_t.append(t1 - t0)
            create_t.append(t3 - t2)
        # Floor is measured from the upload returning; the pull includes the notification's trip.

        # --- 1. latency of the watcher ---------------------------------------------------------------------
        lb = f"lat-{uuid.uuid4().hex[:6]}"
        gcs.create_bucket(lb)
        lsub = sub(f"lat-{lb}")
        w, wport = start_watcher(config(lb, lsub))
        wait_ready(wport)
        base = len(jw.added)
        lat = []
        for i in range(args.latency):
            gcs.bucket(lb).blob(f"mnist/v{i:05d}/_SUCCESS").upload_from_string(b"")
            t0 = time.perf_counter()
            if not jw.wait_count(base + i + 1, 60):
                raise SystemExit("latency: job not created within 60s")
            newest = max(jw.added.values())
            lat.append(newest - t0)
        hist = metrics(wport)
        w.terminate()
        w.wait(60)

        # --- 3. burst ------------------------------------------------------------------------------------
        bb = f"burst-{uuid.uuid4().hex[:6]}"
        gcs.create_bucket(bb)
        bsub = sub(f"burst-{bb}")
        tap = sub(f"tap-{bb}")
        t = time.perf_counter()
        bucket = gcs.bucket(bb)

        def upload(lo: int, hi: int) -> None:
            for i in range(lo, hi):
                bucket.blob(f"mnist/v{i:05d}/_SUCCESS").upload_from_string(b"")

        ths = [
            threading.Thread(target=upload, args=(k * args.versions // 4, (k + 1) * args.versions // 4))
            for k in range(4)
        ]
        [x.start() for x in ths]
        [x.join() for x in ths]
        notes = []
        while len(notes) < args.versions:
            resp = subr.pull(subscription=tap, max_messages=1000, timeout=10)
            notes += [
                m.message
                for m in resp.received_messages
                if m.message.attributes.get("bucketId") == bb
                and m.message.attributes.get("eventType") == "OBJECT_FINALIZE"
            ]
            if resp.received_messages:
                subr.acknowledge(subscription=tap, ack_ids=[m.ack_id for m in resp.received_messages])
        futures = [pub.publish(topic, m.data, **dict(m.attributes)) for m in notes for _ in range(args.copies - 1)]
        for f in futures:
            f.result(timeout=120)
        prep = time.perf_counter() - t
        total_msgs = args.versions * args.copies
        print(f"# burst prepared in {prep:.1f}s: {total_msgs} messages queued", file=sys.stderr)
        base = len(jw.added)
        t0 = time.perf_counter()
        w, wport = start_watcher(config(bb, bsub))
        ok = jw.wait_count(base + args.versions, 900)
        t_jobs = time.perf_counter() - t0
        # Then until every queued message was handled: deduped + created reaches the count queued.
        deadline = time.monotonic() + 300
        m = metrics(wport)
        while (
            m.get("retrain_events_deduped_total", 0) + m.get("retrain_jobs_created_total", 0) < total_msgs
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
            m = metrics(wport)
        t_all = time.perf_counter() - t0
        rss = 0
        for line in Path(f"/proc/{w.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) // 1024
        w.terminate()
        w.wait(60)
        items = cluster.list_jobs(ns, label_selector="retrain.jobgen.io/trigger=data")
        burst_jobs = [
            j for j in items if j["metadata"]["annotations"]["retrain.jobgen.io/key"].startswith(f'["gcs","{bb}"')
        ]
        keys = [j["metadata"]["annotations"]["retrain.jobgen.io/key"] for j in burst_jobs]
        dups = len(keys) - len(set(keys))

        cpu = platform.processor() or platform.machine()
        print(
            f"\nMachine: {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; jobs/versions: "
            f"{args.versions} x {args.copies} notifications; latency samples: {args.latency}\n"
        )
        print("| measurement | p50 | p99 |")
        print("|---|---|---|")
        print(f"| watcher: upload → job ADDED | {pct(lat, 50) * 1000:.0f} ms | {pct(lat, 99) * 1000:.0f} ms |")
        print(
            f"| floor: upload → 1 pull + 1 create | {pct(floor, 50) * 1000:.0f} ms | {pct(floor, 99) * 1000:.0f} ms |"
        )
        print(f"| floor part: notification pull | {pct(pull_t, 50) * 1000:.0f} ms | {pct(pull_t, 99) * 1000:.0f} ms |")
        print(
            f"| floor part: apiserver create | {pct(create_t, 50) * 1000:.1f} ms | {pct(create_t, 99) * 1000:.1f} ms |"
        )
        wh = hist.get("retrain_event_to_job_seconds_sum", 0) / max(hist.get("retrain_event_to_job_seconds_count", 1), 1)
        print(f"| watcher histogram (receipt → created), mean | {wh * 1000:.0f} ms | |")
        print()
        print("| burst | value |")
        print("|---|---|")
        print(f"| messages queued | {total_msgs} ({args.versions} versions x {args.copies}) |")
        print(f"| jobs created | {len(burst_jobs)} (metric: {m.get('retrain_jobs_created_total', 0):.0f}) |")
        print(f"| duplicate jobs | {dups} |")
        print(
            f"| messages received (metric; > queued = Pub/Sub redeliveries) | "
            f"{m.get('retrain_events_received_total', 0):.0f} |"
        )
        print(f"| deduped messages (metric) | {m.get('retrain_events_deduped_total', 0):.0f} |")
        print(f"| time to all {args.versions} jobs | {t_jobs:.1f} s ({args.versions / t_jobs:.0f} jobs/s) |")
        print(f"| time until created + deduped ≥ {total_msgs} | {t_all:.1f} s |")
        print(
            f"| serial floor for {args.versions} versions (p50 pull+create x n) | "
            f"{pct(floor, 50) * args.versions:.1f} s |"
        )
        print(f"| watcher peak RSS (VmHWM) | {rss} MiB |")
        if not ok or len(burst_jobs) != args.versions or dups:
            print("FAILED: jobs != versions or duplicates", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        lc.down()
        emu.down()


if __name__ == "__main__":
    sys.exit(main())
