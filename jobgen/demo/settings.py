"""What the demo runs: its buckets, topic, namespace, the job spec and the watcher config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent.parent
PROJECT = "demo-project"
TOPIC = "gcs-notifications"
SUBSCRIPTION = "retrain-gcs"
BUCKETS = {
    "data": "demo-data",
    "models": "demo-models",
    "checkpoints": "demo-checkpoints",
    "state": "demo-watcher-state",  # the watcher's claims (terraform's <prefix>-watcher-state)
    # Prediction: input batches and their outputs, in their own buckets (never under the watched data prefix).
    "inputs": "demo-inputs",
    "predictions": "demo-predictions",
}
PREFIX = "mnist"
NAMESPACE = "training"
TRIGGER = "mnist-data"
METRIC = "val_accuracy"
KIND_IMAGE = "local/trainer:dev"


def state_dir() -> Path:
    from jobgen.localcluster import cache_dir

    return Path(os.environ.get("JOBGEN_DEMO_DIR") or cache_dir() / "demo")


def spec_doc(fast: bool) -> dict[str, Any]:
    """The demo's job spec: the CPU DDP example, pointed at the emulator buckets, run by the pod runner."""
    from jobgen.podrunner import pod_settings

    labels, annotations = pod_settings()
    doc: dict[str, Any] = yaml.safe_load((REPO / "jobs/cpu-ddp.yaml").read_text())
    doc.update(
        {
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
            "storage": {
                "data": f"gs://{BUCKETS['data']}/{PREFIX}",
                "output": f"gs://{BUCKETS['models']}/{PREFIX}",
                "checkpoints": f"gs://{BUCKETS['checkpoints']}/{PREFIX}",
            },
            "labels": labels,
            "podAnnotations": annotations,
        }
    )
    doc["runPolicy"] = {"backoffLimit": 0, "cleanPodPolicy": "None"}
    doc["restartPolicy"] = "Never"
    return doc


def watcher_config(spec_file: Path, subscription: str, port: int) -> dict[str, Any]:
    return {
        "namespace": NAMESPACE,
        "state": {"bucket": BUCKETS["state"]},
        "jobs": {"mnist": {"file": str(spec_file)}},
        "triggers": [
            {
                "name": TRIGGER,
                "job": "mnist",
                "bucket": BUCKETS["data"],
                "prefix": f"{PREFIX}/",
                "versionDepth": 1,
                "completion": "marker",
                "markers": ["_SUCCESS"],
                "concurrency": "Forbid",
            }
        ],
        "sources": {"pubsub": {"subscription": subscription}},
        "server": {"host": "127.0.0.1", "port": port},
    }
