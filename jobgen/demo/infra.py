"""Steps 1-3 of the demo: start the emulators, a cluster, the watcher and the pod runner; stop them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from jobgen.demo.settings import (
    BUCKETS,
    KIND_IMAGE,
    NAMESPACE,
    PROJECT,
    REPO,
    SUBSCRIPTION,
    TOPIC,
    TRIGGER,
    spec_doc,
    state_dir,
    watcher_config,
)
from jobgen.demo.ui import DemoError, say, tail


class World:
    """The demo's infrastructure: emulators, a cluster, the watcher and the pod runner."""

    def __init__(self, fast: bool, kind: bool = False) -> None:
        self.fast = fast
        self.kind = kind
        self.pod_env: dict[str, str] = {}
        self.state: Path = state_dir()
        self.watcher: subprocess.Popen[bytes] | None = None
        self.runner: Any = None
        self.runner_thread: threading.Thread | None = None
        self.storage: Any = None
        self.cluster: Any = None
        self.subscription = ""

    def start_emulators(self) -> None:
        from jobgen.emulators import Emulators

        if self.kind:  # kind's pods reach the host through the Docker bridge's gateway
            gateway = _docker(["network", "inspect", "kind", "-f", "{{(index .IPAM.Config 0).Gateway}}"]).strip()
            info = Emulators(self.state / "emulators").up(
                PROJECT,
                TOPIC,
                tuple(BUCKETS.values()),
                gcs_bind="0.0.0.0",  # noqa: S104 - kind's pods reach it over the Docker bridge
                gcs_advertise=gateway,
            )
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
        subscriber.create_subscription(
            name=self.subscription, topic=f"projects/{PROJECT}/topics/{TOPIC}", ack_deadline_seconds=60
        )
        say(f"  GCS   {info.storage_host}   buckets: {', '.join(BUCKETS.values())}")
        say(f"  Pub/Sub {info.pubsub_host}   projects/{PROJECT}/topics/{TOPIC} → {self.subscription}")

    def start_cluster(self) -> None:
        from jobgen import kube

        if self.kind:
            subprocess.run([str(REPO / "hack/kind/kind.sh"), "up"], check=True)
            say(f"  building {KIND_IMAGE} from images/trainer (the first build takes a while)")
            _docker(["build", "-t", KIND_IMAGE, str(REPO / "images/trainer")], capture=False)
            kind = subprocess.run(
                [str(REPO / "hack/build-bins.sh"), "--print-dir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            kind_bin = next(iter(sorted(Path(kind).glob("kind-*"))), None)
            subprocess.run(
                [str(kind_bin) if kind_bin else "kind", "load", "docker-image", KIND_IMAGE, "--name", "jobgen"],
                check=True,
            )
            self.cluster = kube.connect("kind-jobgen", None)
            os.environ["KUBECONFIG"] = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube/config")
        else:
            from jobgen.localcluster import LocalCluster, default_state_dir

            info = LocalCluster(default_state_dir()).up()
            os.environ["KUBECONFIG"] = str(info.kubeconfig)
            self.cluster = kube.connect(None, str(info.kubeconfig))
        for job in self.cluster.list_jobs(NAMESPACE, f"retrain.jobgen.io/trigger={TRIGGER}"):
            self.cluster.delete_job(job["kind"], job["metadata"]["name"], NAMESPACE)
        for job in self.cluster.list_objects("batch/v1", "Job", NAMESPACE, "prediction.jobgen.io/name"):
            self.cluster.delete("batch/v1", "Job", job["metadata"]["name"], NAMESPACE)  # an earlier run's

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
        with (self.state / "watcher.log").open("wb") as log:  # the child keeps its own descriptor
            self.watcher = subprocess.Popen(
                [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )
        deadline = time.monotonic() + 60
        while not _http_ok(f"http://127.0.0.1:{port}/readyz"):
            if self.watcher.poll() is not None or time.monotonic() > deadline:
                raise DemoError(
                    f"the watcher did not become ready; see {self.state / 'watcher.log'}:\n"
                    + tail(self.state / "watcher.log")
                )
            time.sleep(0.3)
        say(f"  watcher pid {self.watcher.pid}: `jobgen watch --config {config}` (log {self.state / 'watcher.log'})")

        if self.kind:
            say("  kind runs the pods' containers itself (no pod runner)")
            return
        from jobgen.podrunner import PodRunner

        self.runner = PodRunner(self.cluster, NAMESPACE, self.state / "pod-logs", cwd=str(REPO), poll=0.3)
        self.runner_thread = threading.Thread(target=self.runner.run, daemon=True)
        self.runner_thread.start()
        say(
            f"  pod runner: pods labelled jobgen.io/local-exec=true run as local processes "
            f"(logs {self.state / 'pod-logs'})"
        )

    def stop_ours(self) -> None:
        """Stop the watcher and the pod runner's processes (the cluster and emulators stay up)."""
        if self.runner is not None:
            self.runner.shutdown()
        if self.watcher is not None:
            from jobgen.localcluster.procs import stop_group

            stop_group(self.watcher.pid, timeout=15)
            self.watcher.wait()


def _docker(args: list[str], capture: bool = True) -> str:
    proc = subprocess.run(["docker", *args], capture_output=capture, text=True, check=False)
    if proc.returncode != 0:
        raise DemoError(f"docker {args[0]} failed: {(proc.stderr or '').strip()}")
    return proc.stdout or ""


def _storage_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials())


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - a loopback http:// URL we built
            return bool(resp.status == 200)
    except OSError:
        return False


def down() -> int:
    from jobgen.emulators import Emulators
    from jobgen.localcluster import LocalCluster, default_state_dir

    stopped = LocalCluster(default_state_dir()).down() + Emulators(state_dir() / "emulators").down()
    if os.environ.get("DEMO_CLUSTER") == "kind":
        subprocess.run([str(REPO / "hack/kind/kind.sh"), "down"], check=False)
        stopped.append("kind cluster jobgen")
    say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    return 0
