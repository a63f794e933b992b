"""Steps 4-5 of the demo: a data version lands, the watcher's job trains, the registry decides."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobgen.demo.infra import World
from jobgen.demo.settings import BUCKETS, METRIC, NAMESPACE, PREFIX, TRIGGER
from jobgen.demo.ui import DemoError, say, tail


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


class Retrain:
    """One data version after another, on a started :class:`World`."""

    def __init__(self, world: World, timeout: float) -> None:
        self.world = world
        self.timeout = timeout
        self.runs: list[Run] = []

    @property
    def state(self) -> Path:
        return self.world.state

    def land(self, version: str, fraction: float, seed: int) -> Run:
        """Write data version ``version`` (a fraction of the digits data set) and its _SUCCESS marker."""
        from trainer import data

        arrays, classes = data.digits(seed=0)
        n = max(200, int(len(arrays["y"]) * fraction))
        subset = {k: v[:n] for k, v in arrays.items()}
        uri = f"gs://{BUCKETS['data']}/{PREFIX}/{version}"
        data.write_dataset(uri, subset, classes, shards=4)
        self.world.storage.bucket(BUCKETS["data"]).blob(f"{PREFIX}/{version}/_SUCCESS").upload_from_string(b"")
        say(f"  wrote {uri}/ ({n} examples, 4 train shards + manifest.json), then _SUCCESS")
        run = Run(data_version=version, started=time.monotonic())
        self.runs.append(run)
        return run

    def follow(self, run: Run) -> None:
        from jobgen.kubeflow import state_of

        deadline = time.monotonic() + self.timeout
        seen_state = ""
        log_offsets: dict[str, int] = {}
        while time.monotonic() < deadline:
            if self.world.watcher is not None and self.world.watcher.poll() is not None:
                raise DemoError(
                    f"the watcher exited ({self.world.watcher.returncode}):\n" + tail(self.state / "watcher.log")
                )
            jobs = [
                j
                for j in self.world.cluster.list_jobs(NAMESPACE, f"retrain.jobgen.io/trigger={TRIGGER}")
                if (j["metadata"].get("annotations") or {})
                .get("retrain.jobgen.io/data-uri", "")
                .rstrip("/")
                .endswith(f"/{run.data_version}")
            ]
            if jobs:
                job = jobs[0]
                if not run.job:
                    run.job = job["metadata"]["name"]
                    say(
                        f"  watcher created {job['kind']} {run.job} "
                        f"({time.monotonic() - run.started:.1f}s after the marker)"
                    )
                state, _ = state_of(job)
                if state != seen_state:
                    say(f"  {time.monotonic() - run.started:6.1f}s  {run.job}: {state}")
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
        with path.open("rb") as fh:
            fh.seek(offsets.get(job, 0))
            chunk = fh.read()
            offsets[job] = fh.tell()
        for line in chunk.decode(errors="replace").splitlines():
            if any(word in line for word in ("epoch", "published", "promot", "checkpoint", "Error", "error")):
                say(f"    │ {line[:160]}")

    def read_registry(self, run: Run) -> dict[str, Any] | None:
        """The version this run published (found by its lineage's job name) and the current LATEST."""
        from trainer.registry import Registry

        registry = Registry(f"gs://{BUCKETS['models']}/{PREFIX}")
        published = registry.published_by([run.job]).get(run.job) if run.job else None
        if published is not None:
            run.model_version = published.version
            run.metric = published.metrics.get(METRIC)
            base = f"{PREFIX}/{published.version}"
            curves = self.world.storage.bucket(BUCKETS["models"]).blob(f"{base}/curves.csv").download_as_text()
            run.curves = parse_csv(curves)
        latest, _ = registry.latest()
        run.promoted = bool(latest and latest.get("version") == run.model_version)
        return latest


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
