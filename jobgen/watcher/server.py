"""The process: `jobgen watch --config FILE`.

/healthz (the process and its loops are alive), /readyz (state bucket and apiserver answered at
start, sources subscribed, no backend outage, not shutting down), /metrics (Prometheus). JSON logs
on stderr. SIGTERM/SIGINT: retries end, each stream stops pulling, in-flight callbacks finish or
nack, and the client sends those nacks before its dispatcher stops; exit 0.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jobgen.watcher.obs import LOG, Metrics, setup_logging


class WatcherProcess:
    def __init__(self, config_path: str | Path, kubeconfig: str | None = None, context: str | None = None) -> None:
        from jobgen.watcher.config import load_config, load_jobs, load_predictions, pipeline_packages

        self.config_path = str(config_path)
        self.config, self.predictions = load_predictions(load_config(config_path), config_path)
        self.specs = load_jobs(self.config, config_path)
        self.pipelines = pipeline_packages(self.config, config_path)
        self.kubeconfig, self.context = kubeconfig, context
        self.stop = threading.Event()
        self.metrics = Metrics()
        self.started = False
        self.pullers: list[Any] = []
        self.poller: Any = None
        self.heartbeat = time.monotonic()
        self.httpd: ThreadingHTTPServer | None = None
        self.app: Any = None

    # --- probes --------------------------------------------------------------
    def healthy(self) -> bool:
        threads = (self.app.threads if self.app else []) + ([self.poller.thread] if self.poller else [])
        loops_ok = all(t is None or t.is_alive() for t in threads) or self.stop.is_set()
        return loops_ok and time.monotonic() - self.heartbeat < 60

    def ready(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "shutting down"
        if not self.started:
            out = self.app.outages.current() if self.app else {}
            return False, "starting" + "".join(f"; {b} unreachable for {s:.0f}s" for b, s in out.items())
        if any(not p.alive for p in self.pullers):
            return False, "a subscription stream stopped"
        out = self.app.outages.current()
        if out:
            return False, "outage: " + ", ".join(
                f"{b} unreachable for {s:.0f}s (messages kept leased)" for b, s in sorted(out.items())
            )
        return True, "ok"

    def serve_http(self) -> None:
        proc = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/healthz":
                    ok, text = proc.healthy(), "ok"
                    self._send(200 if ok else 503, (text if ok else "unhealthy").encode())
                elif self.path == "/readyz":
                    ok, text = proc.ready()
                    self._send(200 if ok else 503, text.encode())
                elif self.path == "/metrics":
                    self._send(200, proc.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, b"not found")

            def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        srv = self.config.server
        self.httpd = ThreadingHTTPServer((srv.host, srv.port), Handler)
        self.httpd.daemon_threads = True
        port = self.httpd.server_address[1]
        port_file = os.environ.get("JOBGEN_WATCH_PORT_FILE")
        if port_file:
            Path(port_file).write_text(f"{port}\n")
        threading.Thread(target=self.httpd.serve_forever, name="http", daemon=True).start()
        LOG.info("serving probes and metrics", extra={"port": port})

    # --- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        from jobgen import kube
        from jobgen.watcher.app import App
        from jobgen.watcher.retrying import Outages, Stopped
        from jobgen.watcher.sources.poll import Poller
        from jobgen.watcher.sources.pubsub import DeadLetterPublisher, PubSubPuller
        from jobgen.watcher.state import GcsBlobs
        from jobgen.watcher.targets.kube import KubeAdapter

        cfg = self.config
        self.serve_http()
        outages = Outages(self.metrics)
        cluster = kube.connect(self.context, self.kubeconfig, retry_seconds=0)  # the watcher retries itself
        api = KubeAdapter(cluster, cfg.namespace, on_ok=outages.up)
        blobs = GcsBlobs(cfg.state.bucket, on_ok=outages.up)
        dead = DeadLetterPublisher(cfg.dead_letter.topic) if cfg.dead_letter.topic else None
        self.app = app = App(
            cfg, self.specs, api, blobs, self.metrics, outages, self.stop, dead, self.pipelines, None, self.predictions
        )
        try:
            app.check_backends()  # nothing is acked before the state bucket and the apiserver answer
        except Stopped:
            return
        app.start_loops()
        if cfg.sources.poll:
            self.poller = Poller(cfg.sources.poll, app.sensor, app.stores, list(cfg.triggers))
            self.poller.start(self.stop)
        if cfg.sources.pubsub:
            self.pullers.append(PubSubPuller(cfg.sources.pubsub, app.sensor.on_notification, "pubsub"))
        if cfg.sources.requests:
            self.pullers.append(PubSubPuller(cfg.sources.requests, app.sensor.on_request, "requests"))
        for p in self.pullers:
            p.start()
        self.started = True
        self.metrics.ready.set(1)
        LOG.info(
            "watcher started",
            extra={
                "triggers": [t.name for t in cfg.triggers],
                "jobs": [*self.specs, *self.predictions],
                "namespace": cfg.namespace,
                "state_bucket": cfg.state.bucket,
            },
        )

    def shutdown(self) -> None:
        if getattr(self, "_shut", False):
            return
        self._shut = True
        LOG.info("stopping: no new messages; finishing in-flight work")
        self.stop.set()  # retries end: their callbacks nack
        self.metrics.ready.set(0)
        for p in self.pullers:
            p.stop()
        LOG.info("stopped")
        if self.httpd is not None:
            self.httpd.shutdown()

    def run(self) -> int:
        def on_signal(signum: int, _frame: Any) -> None:
            LOG.info("signal received", extra={"signal": signal.Signals(signum).name})
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            self.start()
            while not self.stop.wait(1.0):
                self.heartbeat = time.monotonic()
                dead = [p.name for p in self.pullers if not p.alive]
                if dead:
                    LOG.error("subscription stream ended; exiting for a restart", extra={"sources": dead})
                    self.shutdown()
                    return 1
        finally:
            self.shutdown()
        return 0


def main(config: str, kubeconfig: str | None = None, context: str | None = None, log_level: str = "INFO") -> int:
    setup_logging(log_level)
    return WatcherProcess(config, kubeconfig, context).run()
