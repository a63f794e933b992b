"""Wiring only: sources → sensor → targets, over the durable state and the one retry policy.

    sources (Pub/Sub notifications, retrain requests, polling)
      → sensor (parse, rules, debounce, dedupe through claims, Forbid/Replace)
      → targets (training job or prediction Indexed Job on the apiserver, KFP run)

Every decision reads the claims in the state bucket (:mod:`jobgen.watcher.state`); every call to a
backend goes through :class:`~jobgen.watcher.retrying.RetryPolicy`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from jobgen.predict.spec import PredictionSpec
from jobgen.spec import JobSpec
from jobgen.watcher.config import WatcherConfig
from jobgen.watcher.obs import LOG, Metrics
from jobgen.watcher.retrying import Outages, RetryPolicy
from jobgen.watcher.sensor.sensor import DeadLetter, Delivery, Outcome, Sensor
from jobgen.watcher.state import Blobs, StateStores
from jobgen.watcher.targets import Target
from jobgen.watcher.targets.job import TrainingJobTarget
from jobgen.watcher.targets.kube import ClusterApi
from jobgen.watcher.targets.pipeline import PipelineRunTarget
from jobgen.watcher.targets.predict import PredictionJobTarget

__all__ = ["App", "Delivery", "Outcome"]


class App:
    def __init__(
        self,
        config: WatcherConfig,
        specs: Mapping[str, JobSpec],
        api: ClusterApi,
        blobs: Blobs,
        metrics: Metrics | None = None,
        outages: Outages | None = None,
        stop: threading.Event | None = None,
        dead_letter: DeadLetter | None = None,
        pipelines: Mapping[str, Path] | None = None,
        extra_targets: Mapping[str, Target] | None = None,
        predictions: Mapping[str, PredictionSpec] | None = None,
    ) -> None:
        """``config`` as :func:`jobgen.watcher.config.load_predictions` returned it when ``predictions``
        (its prediction jobs) are given; ``specs`` are the training jobs."""
        self.config = config
        self.metrics = metrics or Metrics()
        self.outages = outages or Outages(self.metrics)
        self.stop = stop or threading.Event()
        self.retry = RetryPolicy(config.retry.initial_seconds, config.retry.max_seconds, self.stop, self.outages)
        self.stores = StateStores.over(blobs, config.state.prefix)
        self.api = api
        self.job_target = TrainingJobTarget(api, self.stores.claims, specs)
        pipelines = dict(pipelines or {})
        pipeline_target = PipelineRunTarget(
            self.stores.claims,
            {n: ref.pipeline for n, ref in config.jobs.items() if ref.pipeline is not None},
            pipelines,
            {t.name: dict(t.params) for t in config.triggers},
            config.state.claim_lease_seconds,
        )
        targets: dict[str, Target] = {
            name: (pipeline_target if name in pipelines else self.job_target) for name in config.jobs
        }
        if predictions:
            prediction_target = PredictionJobTarget(api, self.stores.claims, predictions)
            targets.update(dict.fromkeys(predictions, prediction_target))
        targets.update(extra_targets or {})
        self.sensor = Sensor(config, specs, targets, self.stores, self.retry, self.metrics, dead_letter)
        self.threads: list[threading.Thread] = []

    def check_backends(self) -> None:
        """The state bucket and the apiserver answer (retried with the one policy until they do)."""

        def probe() -> None:
            self.stores.blobs.check()
            self.api.list_jobs("retrain.jobgen.io/probe=1")

        self.retry.call(probe, None, what="start-up")

    def loop(self, name: str, every: float, fn: Callable[[], Any]) -> None:
        def body() -> None:
            while not self.stop.wait(every):
                try:
                    fn()
                except Exception as exc:
                    self.metrics.errors.labels(name).inc()
                    LOG.warning(f"{name} failed; retrying", extra={"error": str(exc)[:300]})

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def start_loops(self) -> None:
        cfg = self.config
        if any(t.completion == "debounce" for t in cfg.triggers):
            self.sensor.debounce.refresh()
            self.loop("debounce", 0.5, self.sensor.fire_due)
            self.loop("pending", cfg.pending_check_seconds, self.sensor.debounce.refresh)
        if any(t.concurrency == "Forbid" for t in cfg.triggers) or (
            cfg.sources.requests and cfg.sources.requests.concurrency == "Forbid"
        ):
            self.loop("queue", cfg.queue_check_seconds, self.sensor.drain_queue)
