"""`make demo`: the whole retraining loop on one machine, with no cloud account and no Docker.

    python -m jobgen.demo [--fast] [--timeout 900]
    python -m jobgen.demo down

1. fake-gcs-server and the Pub/Sub emulator start; fake-gcs-server publishes real GCS notifications.
2. The local control plane starts (kube-apiserver, scheduler, controller-manager, training-operator
   v1.9.4, kwok nodes); the pod runner backs the job's pods with real local processes.
   DEMO_CLUSTER=kind uses a kind cluster instead (needs Docker): the trainer image is built and
   loaded into it, and the pods reach the GCS emulator through Docker's bridge.
3. The watcher (`jobgen watch`) starts on the notification subscription.
4. Data version v1 lands in gs://demo-data/mnist/v1/ (its _SUCCESS marker last): the watcher creates
   one PyTorchJob, the operator creates master and worker pods, and real DDP training (torch,
   gloo, 2 processes) reads the data from GCS, checkpoints, and publishes model, metrics, lineage
   and curves to the registry gs://demo-models/mnist/, promoting LATEST.
5. Data version v2 lands: a second job retrains, and LATEST moves only if the new model is better.
6. A summary table and a PNG of the training curves (saved to the registry) end the run.

Everything it starts is tracked: Ctrl-C stops it all; `down` (make demo-down) stops what a finished
run leaves up for exploring (the local cluster and the emulators). A rerun starts from clean buckets
and an empty job history, so it is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
PROJECT = "demo-project"
TOPIC = "gcs-notifications"
SUBSCRIPTION = "retrain-gcs"
BUCKETS = {"data": "demo-data", "models": "demo-models", "checkpoints": "demo-checkpoints",
           "state": "demo-watcher-state"}  # state: the watcher's claims (terraform's <prefix>-watcher-state)
PREFIX = "mnist"
NAMESPACE = "training"
TRIGGER = "mnist-data"
METRIC = "val_accuracy"
KIND_IMAGE = "local/trainer:dev"


def _state_dir() -> Path:
    from jobgen.localcluster import cache_dir

    return Path(os.environ.get("JOBGEN_DEMO_DIR") or cache_dir() / "demo")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _step(n: int, total: int, title: str) -> None:
    _say(f"\n\033[1m[{n}/{total}] {title}\033[0m")


@dataclass
class Run:
    """One data version's retrain, as the summary reports it."""

    data_version: str
    job: str = ""
    state: str = "Pending"
    started: float = 0.0
    seconds: float = 0.0
    model_version: str = ""
    metric: float | None = None
    promoted: bool = False
    curves: list[dict[str, Any]] = field(default_factory=list)


def spec_doc(fast: bool) -> dict[str, Any]:
    """The demo's job spec: the CPU DDP example, pointed at the emulator buckets, run by the pod runner."""
    from jobgen.podrunner import pod_settings

    labels, annotations = pod_settings()
    doc = yaml.safe_load((REPO / "jobs/cpu-ddp.yaml").read_text())
    doc.update({
        "name": "mnist-demo",
        "image": "local/trainer:dev",  # never pulled: the pod runner runs the command on this machine
        "command": ["python", "-m", "trainer.train"],
        "hyperparameters": {
            "epochs": {"type": "int", "default": 8 if fast else 20, "min": 1},
            "lr": {"type": "float", "default": 0.1, "min": 0.0, "max": 1.0},
            "batch-size": {"type": "int", "default": 32, "min": 1},
            "backend": {"type": "str", "default": "gloo", "choices": ["gloo"]},
            "checkpoint-every": {"type": "int", "default": 20, "min": 1},
            "log-every": {"type": "int", "default": 10, "min": 1},
        },
        "storage": {"data": f"gs://{BUCKETS['data']}/{PREFIX}", "output": f"gs://{BUCKETS['models']}/{PREFIX}",
                    "checkpoints": f"gs://{BUCKETS['checkpoints']}/{PREFIX}"},
        "labels": labels,
        "podAnnotations": annotations,
    })
    doc["runPolicy"] = {"backoffLimit": 0, "cleanPodPolicy": "None"}
    doc["restartPolicy"] = "Never"
    return doc


def watcher_config(spec_file: Path, subscription: str, port: int) -> dict[str, Any]:
    return {
        "namespace": NAMESPACE,
        "state": {"bucket": BUCKETS["state"]},
        "jobs": {"mnist": {"file": str(spec_file)}},
        "triggers": [{"name": TRIGGER, "job": "mnist", "bucket": BUCKETS["data"], "prefix": f"{PREFIX}/",
                      "versionDepth": 1, "completion": "marker", "markers": ["_SUCCESS"],
                      "concurrency": "Forbid"}],
        "sources": {"pubsub": {"subscription": subscription}},
        "server": {"host": "127.0.0.1", "port": port},
    }


class Demo:
    def __init__(self, fast: bool, timeout: float, kind: bool = False) -> None:
        self.fast = fast
        self.kind = kind
        self.pod_env: dict[str, str] = {}
        self.timeout = timeout
        self.state = _state_dir()
        self.watcher: subprocess.Popen[bytes] | None = None
        self.runner: Any = None
        self.runner_thread: threading.Thread | None = None
        self.runs: list[Run] = []

    # --- infrastructure ----------------------------------------------------------------------
    def start_emulators(self) -> None:
        from jobgen.emulators import Emulators

        if self.kind:  # kind's pods reach the host through the Docker bridge's gateway
            gateway = _docker(["network", "inspect", "kind", "-f", "{{(index .IPAM.Config 0).Gateway}}"]).strip()
            info = Emulators(self.state / "emulators").up(PROJECT, TOPIC, tuple(BUCKETS.values()),
                                                          gcs_bind="0.0.0.0", gcs_advertise=gateway)  # noqa: S104
            self.pod_env = {"STORAGE_EMULATOR_HOST": f"http://{gateway}:{info.storage_host.rsplit(':', 1)[1]}"}
        else:
            info = Emulators(self.state / "emulators").up(PROJECT, TOPIC, tuple(BUCKETS.values()))
        os.environ.update(info.env())
        self.storage = _storage_client()
        for bucket in BUCKETS.values():  # a rerun starts from empty buckets
            for blob in list(self.storage.list_blobs(bucket)):
                blob.delete()
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        # A fresh subscription per run: nothing stale is redelivered to this run's watcher.
        for old in subscriber.list_subscriptions(project=f"projects/{PROJECT}"):
            if old.name.split("/")[-1].startswith(f"{SUBSCRIPTION}-"):
                subscriber.delete_subscription(subscription=old.name)
        self.subscription = subscriber.subscription_path(PROJECT, f"{SUBSCRIPTION}-{int(time.time())}")
        subscriber.create_subscription(name=self.subscription, topic=f"projects/{PROJECT}/topics/{TOPIC}",
                                       ack_deadline_seconds=60)
        _say(f"  GCS   {info.storage_host}   buckets: {', '.join(BUCKETS.values())}")
        _say(f"  Pub/Sub {info.pubsub_host}   projects/{PROJECT}/topics/{TOPIC} → {self.subscription}")

    def start_cluster(self) -> None:
        from jobgen import kube

        if self.kind:
            subprocess.run([str(REPO / "hack/kind/kind.sh"), "up"], check=True)
            _say(f"  building {KIND_IMAGE} from images/trainer (the first build takes a while)")
            _docker(["build", "-t", KIND_IMAGE, str(REPO / "images/trainer")], capture=False)
            kind = subprocess.run([str(REPO / "hack/build-bins.sh"), "--print-dir"], capture_output=True, text=True,
                                  check=True).stdout.strip()
            kind_bin = next(iter(sorted(Path(kind).glob("kind-*"))), None)
            subprocess.run([str(kind_bin) if kind_bin else "kind", "load", "docker-image", KIND_IMAGE, "--name",
                            "jobgen"], check=True)
            self.cluster = kube.connect("kind-jobgen", None)
            os.environ["KUBECONFIG"] = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube/config")
        else:
            from jobgen.localcluster import LocalCluster, default_state_dir

            info = LocalCluster(default_state_dir()).up()
            os.environ["KUBECONFIG"] = str(info.kubeconfig)
            self.cluster = kube.connect(None, str(info.kubeconfig))
        for job in kube.list_jobs(self.cluster, NAMESPACE, f"retrain.jobgen.io/trigger={TRIGGER}"):
            kube.delete_job(self.cluster, job["kind"], job["metadata"]["name"], NAMESPACE)

    def start_watcher(self) -> None:
        from jobgen.localcluster.procs import free_port

        self.state.mkdir(parents=True, exist_ok=True)
        spec_file = self.state / "mnist-demo.yaml"
        doc = spec_doc(self.fast)
        if self.kind:  # real containers: the image loaded into kind, the emulator through the bridge
            doc["image"] = KIND_IMAGE
            doc["env"] = {**doc.get("env", {}), **self.pod_env}
        spec_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        port = free_port()
        config = self.state / "watcher.yaml"
        config.write_text(yaml.safe_dump(watcher_config(spec_file, self.subscription, port), sort_keys=False))
        log = open(self.state / "watcher.log", "wb")  # noqa: SIM115 - lives as long as the watcher
        self.watcher = subprocess.Popen([sys.executable, "-m", "jobgen.cli", "watch", "--config", str(config)],
                                        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while not _http_ok(f"http://127.0.0.1:{port}/readyz"):
            if self.watcher.poll() is not None or time.monotonic() > deadline:
                raise DemoError(f"the watcher did not become ready; see {self.state / 'watcher.log'}:\n"
                                + _tail(self.state / "watcher.log"))
            time.sleep(0.3)
        _say(f"  watcher pid {self.watcher.pid}: `jobgen watch --config {config}` (log {self.state / 'watcher.log'})")

        if self.kind:
            _say("  kind runs the pods' containers itself (no pod runner)")
            return
        from jobgen.podrunner import PodRunner

        self.runner = PodRunner(self.cluster.core(), NAMESPACE, self.state / "pod-logs", cwd=str(REPO), poll=0.3)
        self.runner_thread = threading.Thread(target=self.runner.run, daemon=True)
        self.runner_thread.start()
        _say(f"  pod runner: pods labelled jobgen.io/local-exec=true run as local processes "
             f"(logs {self.state / 'pod-logs'})")

    def stop_ours(self) -> None:
        """Stop the watcher and the pod runner's processes (the cluster and emulators stay up)."""
        if self.runner is not None:
            self.runner.shutdown()
        if self.watcher is not None and self.watcher.poll() is None:
            os.killpg(self.watcher.pid, signal.SIGTERM)
            try:
                self.watcher.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.watcher.pid, signal.SIGKILL)
                self.watcher.wait()

    # --- the retraining loop -----------------------------------------------------------------
    def land(self, version: str, fraction: float, seed: int) -> Run:
        """Write data version ``version`` (a fraction of the digits data set) and its _SUCCESS marker."""
        from trainer import data

        arrays, classes = data.digits(seed=0)
        n = max(200, int(len(arrays["y"]) * fraction))
        subset = {k: v[:n] for k, v in arrays.items()}
        uri = f"gs://{BUCKETS['data']}/{PREFIX}/{version}"
        data.write_dataset(uri, subset, classes, shards=4)
        self.storage.bucket(BUCKETS["data"]).blob(f"{PREFIX}/{version}/_SUCCESS").upload_from_string(b"")
        _say(f"  wrote {uri}/ ({n} examples, 4 train shards + manifest.json), then _SUCCESS")
        run = Run(data_version=version, started=time.monotonic())
        self.runs.append(run)
        return run

    def follow(self, run: Run) -> None:
        from jobgen import kube
        from jobgen.status import job_state

        deadline = time.monotonic() + self.timeout
        seen_state = ""
        log_offsets: dict[str, int] = {}
        while time.monotonic() < deadline:
            if self.watcher is not None and self.watcher.poll() is not None:
                raise DemoError(f"the watcher exited ({self.watcher.returncode}):\n" + _tail(self.state / "watcher.log"))
            jobs = [j for j in kube.list_jobs(self.cluster, NAMESPACE, f"retrain.jobgen.io/trigger={TRIGGER}")
                    if (j["metadata"].get("annotations") or {}).get("retrain.jobgen.io/data-uri", "")
                    .rstrip("/").endswith(f"/{run.data_version}")]
            if jobs:
                job = jobs[0]
                if not run.job:
                    run.job = job["metadata"]["name"]
                    _say(f"  watcher created {job['kind']} {run.job} "
                         f"({time.monotonic() - run.started:.1f}s after the marker)")
                state, _ = job_state(job)
                if state != seen_state:
                    _say(f"  {time.monotonic() - run.started:6.1f}s  {run.job}: {state}")
                    seen_state = state
                self._echo_logs(run.job, log_offsets)
                if state in ("Succeeded", "Failed"):
                    run.state, run.seconds = state, time.monotonic() - run.started
                    self._echo_logs(run.job, log_offsets)
                    return
            time.sleep(0.5)
        raise DemoError(f"data version {run.data_version} did not finish within {self.timeout:.0f}s")

    def _echo_logs(self, job: str, offsets: dict[str, int]) -> None:
        path = self.state / "pod-logs" / f"{job}-master-0.log"
        if not path.exists():
            return
        with open(path, "rb") as fh:
            fh.seek(offsets.get(job, 0))
            chunk = fh.read()
            offsets[job] = fh.tell()
        for line in chunk.decode(errors="replace").splitlines():
            if any(word in line for word in ("epoch", "published", "promot", "checkpoint", "Error", "error")):
                _say(f"    │ {line[:160]}")

    def read_registry(self, run: Run) -> dict[str, Any] | None:
        """The version this run published (found by its lineage's job name) and the current LATEST."""
        from trainer.registry import Registry

        registry = Registry(f"gs://{BUCKETS['models']}/{PREFIX}")
        for blob in self.storage.list_blobs(BUCKETS["models"], prefix=f"{PREFIX}/"):
            if not blob.name.endswith("/lineage.json"):
                continue
            lineage = json.loads(blob.download_as_bytes())
            if lineage.get("job_name") == run.job:
                version = blob.name.split("/")[-2]
                base = blob.name.rsplit("/", 1)[0]
                metrics = json.loads(self.storage.bucket(BUCKETS["models"]).blob(f"{base}/metrics.json")
                                     .download_as_bytes())
                run.model_version = version
                run.metric = metrics.get(METRIC)
                curves = self.storage.bucket(BUCKETS["models"]).blob(f"{base}/curves.csv").download_as_text()
                run.curves = _parse_csv(curves)
        latest, _ = registry.latest()
        run.promoted = bool(latest and latest.get("version") == run.model_version)
        return latest

    def plot(self) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for run in self.runs:
            if not run.curves:
                continue
            x = [float(r.get("epoch", i)) for i, r in enumerate(run.curves)]
            label = f"{run.model_version} (data {run.data_version})"
            axes[0].plot(x, [float(r["train_loss"]) for r in run.curves], marker="o", label=f"{label} train")
            axes[0].plot(x, [float(r["val_loss"]) for r in run.curves], linestyle="--", marker="x", label=f"{label} val")
            axes[1].plot(x, [float(r["val_accuracy"]) for r in run.curves], marker="o", label=label)
        axes[0].set(title="loss", xlabel="epoch")
        axes[1].set(title="validation accuracy", xlabel="epoch")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = self.state / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        self.storage.bucket(BUCKETS["models"]).blob(f"{PREFIX}/curves.png").upload_from_filename(str(path))
        return path

    def summary(self) -> str:
        from jobgen.status import table

        rows = [["DATA", "JOB", "STATE", "SECONDS", "MODEL VERSION", METRIC.upper(), "LATEST"]]
        for run in self.runs:
            rows.append([run.data_version, run.job or "-", run.state, f"{run.seconds:.0f}", run.model_version or "-",
                         "-" if run.metric is None else f"{run.metric:.4f}", "yes" if run.promoted else "no"])
        return table(rows)


class DemoError(Exception):
    pass


def _docker(args: list[str], capture: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=capture, text=True)
    if proc.returncode != 0:
        raise DemoError(f"docker {args[0]} failed: {(proc.stderr or '').strip()}")
    return proc.stdout or ""


def _storage_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
            return resp.status == 200
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _parse_csv(text: str) -> list[dict[str, str]]:
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def down() -> int:
    from jobgen.emulators import Emulators
    from jobgen.localcluster import LocalCluster, default_state_dir

    stopped = LocalCluster(default_state_dir()).down() + Emulators(_state_dir() / "emulators").down()
    if os.environ.get("DEMO_CLUSTER") == "kind":
        subprocess.run([str(REPO / "hack/kind/kind.sh"), "down"], check=False)
        stopped.append("kind cluster jobgen")
    _say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgen.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--fast", action="store_true", help="fewer epochs per model (CI)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds each retrain may take")
    args = parser.parse_args(argv)
    if args.command == "down":
        return down()

    kind = os.environ.get("DEMO_CLUSTER", "local") == "kind"
    if os.environ.get("DEMO_CLUSTER", "local") not in ("local", "kind"):
        _say(f"error: DEMO_CLUSTER={os.environ['DEMO_CLUSTER']!r}; expected local (default) or kind")
        return 2
    if kind and (shutil.which("docker") is None
                 or subprocess.run(["docker", "info"], capture_output=True).returncode != 0):
        _say("error: DEMO_CLUSTER=kind needs a running Docker engine ('docker info' failed); "
             "without Docker, run `make demo` (the local control plane)")
        return 2
    demo = Demo(args.fast, args.timeout, kind)
    total = 6
    interrupted = False
    try:
        _step(1, total, "Start the emulators: fake-gcs-server (GCS) and gcloud's Pub/Sub emulator")
        demo.start_emulators()
        _step(2, total, "Start the local control plane: kube-apiserver (RBAC), etcd, scheduler, controller-manager, "
                        "training-operator v1.9.4, kwok nodes")
        demo.start_cluster()
        _step(3, total, "Start the retraining watcher and the pod runner")
        demo.start_watcher()
        for n, (version, fraction) in enumerate((("v1", 0.25), ("v2", 1.0)), start=4):
            what = "A first data version lands" if version == "v1" else "A second, larger data version lands"
            _step(n, total, f"{what}: gs://{BUCKETS['data']}/{PREFIX}/{version}/")
            run = demo.land(version, fraction, seed=n)
            demo.follow(run)
            latest = demo.read_registry(run)
            if run.state != "Succeeded":
                raise DemoError(f"{run.job} {run.state}; pod logs in {demo.state / 'pod-logs'}")
            verdict = "promoted to LATEST" if run.promoted else (
                f"not promoted: LATEST stays {latest.get('version')} ({METRIC} {latest.get('value'):.4f})"
                if latest else "not promoted")
            _say(f"  model {run.model_version}: {METRIC} {run.metric:.4f}, {verdict}")
        _step(6, total, "Summary")
        _say(demo.summary())
        png = demo.plot()
        _say(f"\ntraining curves: {png}  (also gs://{BUCKETS['models']}/{PREFIX}/curves.png)")
    except KeyboardInterrupt:
        interrupted = True
        _say("\ninterrupted: stopping everything the demo started")
    except DemoError as exc:
        _say(f"\nerror: {exc}")
        return 1
    finally:
        demo.stop_ours()
        if interrupted:
            down()
    if interrupted:
        return 130
    kubeconfig = os.environ["KUBECONFIG"]
    _say("\nNext:")
    _say("  source .venv/bin/activate")
    _say(f"  export KUBECONFIG={shlex.quote(kubeconfig)}")
    _say(f"  kubectl get pytorchjobs -n {NAMESPACE}          # the two retrains")
    _say(f"  jobgen status -n {NAMESPACE}")
    _say(f"  eval $(python -m jobgen.emulators env --state-dir {shlex.quote(str(demo.state / 'emulators'))})")
    _say(f"  python -c \"from trainer.registry import Registry; print(Registry('gs://{BUCKETS['models']}/{PREFIX}')"
         ".latest()[0])\"")
    _say("  make demo-down                                  # stop the local cluster and the emulators")
    return 0


if __name__ == "__main__":
    sys.exit(main())
