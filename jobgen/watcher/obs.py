"""Observability: Prometheus metrics (own registry per watcher) and JSON log lines."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOG = logging.getLogger("jobgen.watcher")
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=True, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("google", "urllib3", "grpc", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Metrics:
    """The watcher's metrics, in a registry of its own (several watchers can live in one process)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        self.received = Counter("retrain_events_received", "Messages/objects received", ["source"], registry=r)
        self.deduped = Counter("retrain_events_deduped", "Events whose job existed already", ["trigger"], registry=r)
        self.skipped = Counter("retrain_events_skipped", "Events deliberately skipped", ["reason"], registry=r)
        self.rejected = Counter(
            "retrain_events_rejected", "Invalid messages sent to the dead-letter path", ["reason"], registry=r
        )
        self.jobs_created = Counter("retrain_jobs_created", "Jobs created", ["trigger"], registry=r)
        self.queued = Counter(
            "retrain_versions_queued", "Versions queued by the Forbid policy", ["trigger"], registry=r
        )
        self.errors = Counter("retrain_errors", "Failures that will be retried", ["stage"], registry=r)
        self.latency = Histogram(
            "retrain_event_to_job_seconds",
            "From receiving the completing event to the job being created",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.inflight = Gauge("retrain_inflight", "Events being processed", registry=r)
        self.pending_versions = Gauge("retrain_pending_versions", "Debounce versions waiting for quiet", registry=r)
        self.ready = Gauge("retrain_ready", "1 when the watcher is ready", registry=r)
        self.outage = Gauge(
            "retrain_outage", "1 while a backend (kubernetes, gcs, kfp, pubsub) is unreachable", ["backend"], registry=r
        )
        self.dead_lettered = Counter(
            "retrain_dead_lettered", "Messages the watcher itself sent to the dead-letter topic", ["reason"], registry=r
        )

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, labels or None)
        return 0.0 if v is None else v
