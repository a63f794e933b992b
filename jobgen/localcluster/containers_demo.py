"""`DEMO_CLUSTER=containers make demo`: the retraining loop with real containers on the real node.

    python -m jobgen.localcluster.containers_demo [--epochs N] [--timeout S] [--keep]
    python -m jobgen.localcluster.containers_demo down

1. The local cluster starts with its real node (``up --real-node``: containerd, kubelet, kube-proxy,
   CoreDNS); the images of ``make images-local`` are imported into containerd.
2. fake-gcs-server and the Pub/Sub emulator listen on the node address, where pods reach them.
3. ``helm install`` of charts/retrain-watcher with the locally built watcher image, in the training
   namespace (PodSecurity ``restricted``): it runs as a pod, non-root on a read-only root filesystem,
   talking to the apiserver with the chart's ServiceAccount token through the kubernetes Service.
4. A data version lands in fake GCS (``_SUCCESS`` last): the watcher creates one PyTorchJob, whose
   master and worker run the trainer image as containers: DDP (gloo) over the pod network, with
   MASTER_ADDR the operator's headless Service resolved by CoreDNS; it publishes to the registry.

The same steps back tests/containers (:class:`ContainersLoop`). Everything is stopped by ``down``
(also at the end unless ``--keep``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from google.cloud import pubsub_v1, storage
from trainer import data

from jobgen.emulators import Emulators

from .bins import REPO_ROOT, binaries, cache_dir
from .cluster import LocalCluster
from .errors import ClusterError
from .realnode import IMAGES, NODE_IP, TRAINING_NAMESPACE

PROJECT = "demo-project"
TOPIC = "gcs-notifications"
# state: the watcher's claims and pending versions (the chart's gcp.stateBucket)
BUCKETS = {
    "data": "demo-data",
    "models": "demo-models",
    "checkpoints": "demo-checkpoints",
    "state": "demo-watcher-state",
}
PREFIX = "mnist"
RELEASE = "retrain"
CHART = REPO_ROOT / "charts" / "retrain-watcher"
TRIGGER = "data"

Log = Callable[[str], None]


def _say(msg: str) -> None:
    print(msg, flush=True)


def state_dir() -> Path:
    return Path(os.environ.get("JOBGEN_CONTAINERS_DEMO_DIR") or cache_dir() / "containers-demo")


def job_spec(
    storage_host: str, epochs: int, *, name: str = "retrain", restart: str = "ExitCode", checkpoint_every: int = 10
) -> dict[str, Any]:
    """The retrain job as the chart's `jobs.train`: the locally built trainer image, 2 pods."""
    return {
        "kind": "PyTorchJob",
        "name": name,
        "image": IMAGES["trainer"],
        "command": ["python", "-m", "trainer.train"],
        "replicas": {"Master": {"replicas": 1}, "Worker": {"replicas": 1}},
        # two pods and the watcher share the node's 2 CPUs
        "resources": {"cpu": "500m", "memory": "1536Mi"},
        "restartPolicy": restart,
        "runPolicy": {"backoffLimit": 4, "cleanPodPolicy": "None"},
        "hyperparameters": {
            "epochs": {"type": "int", "default": epochs, "min": 1},
            "lr": {"type": "float", "default": 0.1, "min": 0.0, "max": 1.0},
            "batch-size": {"type": "int", "default": 32, "min": 1},
            "backend": {"type": "str", "default": "gloo", "choices": ["gloo"]},
            "checkpoint-every": {"type": "int", "default": checkpoint_every, "min": 1},
            "log-every": {"type": "int", "default": 10, "min": 1},
        },
        "storage": {
            "data": f"gs://{BUCKETS['data']}/{PREFIX}",
            "output": f"gs://{BUCKETS['models']}/{PREFIX}",
            "checkpoints": f"gs://{BUCKETS['checkpoints']}/{PREFIX}",
        },
        "env": {"STORAGE_EMULATOR_HOST": storage_host, "GOOGLE_CLOUD_PROJECT": PROJECT, "OMP_NUM_THREADS": "1"},
        "volumes": {"shm": "256Mi"},
    }


class ContainersLoop:
    """The steps of the containers demo, shared with tests/containers."""

    def __init__(self, state: Path, log: Log = _say, cluster: LocalCluster | None = None) -> None:
        self.state = state
        self.log = log
        self.cluster = cluster or LocalCluster(state / "cluster", context="jobgen-containers")
        self.storage_host = ""
        self.pubsub_host = ""
        self.subscription = ""

    # --- infrastructure ------------------------------------------------------------------
    def start_cluster(self, timeout: float = 900) -> None:
        self.cluster.up(timeout=timeout, real_node=True)
        self.cluster.node.require_images(binaries(), IMAGES.values())

    def start_emulators(self) -> None:
        info = Emulators(self.state / "emulators").up(PROJECT, TOPIC, tuple(BUCKETS.values()), host=NODE_IP)
        os.environ.update(info.env())
        os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT
        self.storage_host, self.pubsub_host = info.storage_host, info.pubsub_host
        storage = self.storage_client()
        for bucket in BUCKETS.values():  # a rerun starts from empty buckets
            for blob in list(storage.list_blobs(bucket)):
                blob.delete()
        subscriber = pubsub_v1.SubscriberClient()
        self.subscription = subscriber.subscription_path(PROJECT, f"retrain-gcs-{int(time.time() * 1000)}")
        subscriber.create_subscription(
            name=self.subscription, topic=f"projects/{PROJECT}/topics/{TOPIC}", ack_deadline_seconds=60
        )
        self.log(f"  GCS {self.storage_host}, Pub/Sub {self.pubsub_host} → {self.subscription}")

    def storage_client(self) -> Any:
        client = storage.Client.create_anonymous_client()
        client.project = PROJECT
        return client

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(None, *args, check=check, input=input)

    # --- the watcher ---------------------------------------------------------------------
    def values(self, epochs: int, schedule: bool = False) -> dict[str, Any]:
        repo, _, tag = IMAGES["watcher"].rpartition(":")
        return {
            "image": {"repository": repo, "tag": tag, "pullPolicy": "IfNotPresent"},
            "gcp": {
                "project": PROJECT,
                "subscription": self.subscription,
                "dataBucket": BUCKETS["data"],
                "modelsBucket": BUCKETS["models"],
                "stateBucket": BUCKETS["state"],
            },
            "trainer": {"namespace": TRAINING_NAMESPACE, "serviceAccount": "jobgen-trainer"},
            "jobs": {"train": job_spec(self.storage_host, epochs)},
            "triggers": [
                {
                    "name": TRIGGER,
                    "job": "train",
                    "prefix": f"{PREFIX}/",
                    "completion": "marker",
                    "markers": ["_SUCCESS"],
                    "versionDepth": 1,
                    "concurrency": "Forbid",
                }
            ],
            "extraEnv": [
                {"name": "STORAGE_EMULATOR_HOST", "value": self.storage_host},
                {"name": "PUBSUB_EMULATOR_HOST", "value": self.pubsub_host},
            ],
            "schedule": {"enabled": schedule, "cron": "0 3 * * 0", "job": "train"},
            # the node has 2 CPUs for the watcher and two training pods
            "resources": {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
        }

    def install_watcher(self, epochs: int, schedule: bool = False, timeout: float = 300) -> None:
        values = self.state / "watcher-values.yaml"
        values.parent.mkdir(parents=True, exist_ok=True)
        values.write_text(yaml.safe_dump(self.values(epochs, schedule), sort_keys=False))
        t = time.monotonic()
        helm = [str(binaries().path("helm")), f"--kubeconfig={self.cluster.kubeconfig}"]
        proc = subprocess.run(
            [
                *helm,
                "upgrade",
                "--install",
                RELEASE,
                str(CHART),
                "-n",
                TRAINING_NAMESPACE,
                "-f",
                str(values),
                "--wait",
                f"--timeout={int(timeout)}s",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout + 30,
        )
        if proc.returncode != 0:
            pods = self.kubectl("get", "pods", "-n", TRAINING_NAMESPACE, "-o", "wide", check=False).stdout
            events = self.kubectl(
                "get", "events", "-n", TRAINING_NAMESPACE, "--sort-by=.lastTimestamp", check=False
            ).stdout[-3000:]
            raise ClusterError(f"helm install of {CHART.name} failed: {proc.stderr.strip()}\n{pods}\n{events}")
        self.log(f"  helm install {RELEASE}: watcher Ready ({time.monotonic() - t:.1f}s)")

    # --- data and jobs -------------------------------------------------------------------
    def land(self, version: str, examples: int = 400) -> str:
        """Write data version `version` (digits subset, 4 train shards + manifest), then _SUCCESS."""
        arrays, classes = data.digits(seed=0)
        subset = {k: v[:examples] for k, v in arrays.items()}
        uri = f"gs://{BUCKETS['data']}/{PREFIX}/{version}"
        data.write_dataset(uri, subset, classes, shards=4)
        self.storage_client().bucket(BUCKETS["data"]).blob(f"{PREFIX}/{version}/_SUCCESS").upload_from_string(b"")
        self.log(f"  wrote {uri}/ ({examples} examples), then _SUCCESS")
        return uri

    def jobs_for(self, version: str) -> list[dict[str, Any]]:
        out = self.kubectl("get", "pytorchjobs", "-n", TRAINING_NAMESPACE, "-o", "json")
        items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
        return [
            j
            for j in items
            if (j["metadata"].get("annotations") or {})
            .get("retrain.jobgen.io/data-uri", "")
            .rstrip("/")
            .endswith(f"/{version}")
        ]

    def job_state(self, kind: str, name: str) -> str:
        out = self.kubectl("get", kind, name, "-n", TRAINING_NAMESPACE, "-o", "json", check=False)
        if out.returncode != 0:
            return "Missing"
        conds = json.loads(out.stdout).get("status", {}).get("conditions") or []
        true = [c["type"] for c in conds if c.get("status") == "True"]
        for state in ("Succeeded", "Failed", "Restarting", "Running", "Created"):
            if state in true:
                return state
        return "Pending"

    def wait_state(self, kind: str, name: str, states: tuple[str, ...], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            state = self.job_state(kind, name)
            if state != seen:
                self.log(f"  {kind} {name}: {state}")
                seen = state
            if state in states:
                return state
            time.sleep(1)
        raise ClusterError(
            f"{kind} {name} not {'/'.join(states)} within {timeout:.0f}s (last {seen}):\n" + self.diagnose(name)
        )

    def diagnose(self, job: str) -> str:
        pods = self.kubectl("get", "pods", "-n", TRAINING_NAMESPACE, "-o", "wide", check=False).stdout
        logs = ""
        for pod in (f"{job}-master-0", f"{job}-worker-0", f"{job}-chief-0"):
            out = self.kubectl("logs", pod, "-n", TRAINING_NAMESPACE, "--tail=15", check=False)
            if out.returncode == 0:
                logs += f"--- {pod}\n{out.stdout}"
        return pods + logs

    def wait_created(self, version: str, timeout: float) -> str:
        """The name of the one job the watcher creates for data version `version`."""
        deadline = time.monotonic() + timeout
        while not (jobs := self.jobs_for(version)):
            if time.monotonic() > deadline:
                logs = self.kubectl(
                    "logs", f"deploy/{RELEASE}-retrain-watcher", "-n", TRAINING_NAMESPACE, "--tail=30", check=False
                )
                raise ClusterError(f"the watcher created no job for {version} within {timeout:.0f}s:\n{logs.stdout}")
            time.sleep(1)
        return str(jobs[0]["metadata"]["name"])

    def latest(self) -> dict[str, Any] | None:
        blob = self.storage_client().bucket(BUCKETS["models"]).get_blob(f"{PREFIX}/LATEST")
        return json.loads(blob.download_as_bytes()) if blob is not None else None

    def down(self) -> list[str]:
        return self.cluster.down() + Emulators(self.state / "emulators").down()


def _loop(loop: ContainersLoop, epochs: int, timeout: float) -> None:
    t0 = time.monotonic()
    _say("[1/4] local cluster with the real node (containerd, kubelet, kube-proxy, CoreDNS)")
    loop.start_cluster()
    _say(f"  up ({time.monotonic() - t0:.0f}s)")
    _say("[2/4] fake-gcs-server and the Pub/Sub emulator on the node address")
    loop.start_emulators()
    _say("[3/4] helm install charts/retrain-watcher (watcher image, restricted pod security)")
    loop.install_watcher(epochs)
    _say("[4/4] data version v1 lands: the watcher creates one PyTorchJob, trained in containers")
    t = time.monotonic()
    loop.land("v1", examples=1500)
    name = loop.wait_created("v1", 120)
    _say(f"  PyTorchJob {name} created {time.monotonic() - t:.1f}s after the marker")
    state = loop.wait_state("pytorchjob", name, ("Succeeded", "Failed"), timeout)
    if state != "Succeeded":
        raise ClusterError(f"{name} {state}:\n{loop.diagnose(name)}")
    _say(f"  {name} Succeeded in {time.monotonic() - t:.0f}s; LATEST = {loop.latest()}")
    _say(f"containers demo done in {time.monotonic() - t0:.0f}s")


def run(epochs: int, timeout: float, keep: bool) -> int:
    loop = ContainersLoop(state_dir())
    code = 0
    try:
        _loop(loop, epochs, timeout)
    except (ClusterError, subprocess.SubprocessError) as exc:
        _say(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        _say("interrupted")
        keep, code = False, 130
    finally:
        if not keep:
            stopped = loop.down()
            _say(f"stopped: {', '.join(stopped) or 'nothing'}")
        else:
            _say(
                f"left running; stop with: python -m jobgen.localcluster.containers_demo down\n"
                f"  export KUBECONFIG={loop.cluster.kubeconfig}"
            )
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobgen.localcluster.containers_demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds the training job may take")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and emulators running")
    args = parser.parse_args(argv)
    if args.command == "down":
        stopped = ContainersLoop(state_dir()).down()
        _say(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        return 0
    return run(args.epochs, args.timeout, args.keep)


if __name__ == "__main__":
    sys.exit(main())
