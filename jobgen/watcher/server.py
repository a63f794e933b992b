"""The process: `jobgen watch --config FILE`.

/healthz (the process and its loops are alive), /readyz (state ConfigMap read, sources subscribed,
the apiserver answered recently, not shutting down), /metrics (Prometheus). JSON logs on stderr.
SIGTERM/SIGINT: stop pulling, let in-flight work finish, release held messages, flush the ledger,
exit 0.
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

READY_STALE_SECONDS = 120.0


class WatcherProcess:
    def __init__(self, config_path: str | Path, kubeconfig: str | None = None, context: str | None = None) -> None:
        from jobgen.watcher.config import load_config, load_jobs, pipeline_packages

        self.config_path = str(config_path)
        self.config = load_config(config_path)
        self.specs = load_jobs(self.config, config_path)
        self.pipelines = pipeline_packages(self.config, config_path)
        self.kubeconfig, self.context = kubeconfig, context
        self.stop = threading.Event()
        self.metrics = Metrics()
        self.started = False
        self.pullers: list[Any] = []
        self.poller: Any = None
        self.threads: list[threading.Thread] = []
        self.heartbeat = time.monotonic()
        self.httpd: ThreadingHTTPServer | None = None
        self.watcher: Any = None

    # --- probes --------------------------------------------------------------
    def healthy(self) -> bool:
        loops_ok = all(t.is_alive() for t in self.threads) or self.stop.is_set()
        return loops_ok and time.monotonic() - self.heartbeat < 60

    def ready(self) -> tuple[bool, str]:
        if self.stop.is_set():
            return False, "shutting down"
        if not self.started:
            return False, "starting"
        if any(not p.alive for p in self.pullers):
            return False, "a subscription stream stopped"
        w = self.watcher
        recent = time.monotonic() - max(w.last_cluster_ok, self.poller.last_poll_ok if self.poller else 0)
        if recent > READY_STALE_SECONDS and w.backoff.failures > 0:
            return False, "the apiserver has not answered recently"
        return True, "ok"

    def serve_http(self) -> None:
        proc = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
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
    def _loop(self, name: str, every: float, fn: Any) -> None:
        def body() -> None:
            while not self.stop.wait(every):
                self.heartbeat = time.monotonic()
                try:
                    fn()
                except Exception as exc:  # noqa: BLE001 - loops retry on the next tick
                    self.metrics.errors.labels(name).inc()
                    LOG.warning(f"{name} failed; retrying", extra={"error": str(exc)[:300]})

        t = threading.Thread(target=body, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def start(self) -> None:
        from jobgen import kube
        from jobgen.watcher.app import Watcher
        from jobgen.watcher.sink import KubeSink
        from jobgen.watcher.sources import DeadLetterPublisher, Poller, PubSubPuller

        cfg = self.config
        self.serve_http()
        cluster = kube.connect(self.context, self.kubeconfig)
        sink = KubeSink(cluster, cfg.namespace, cfg.state_config_map)
        dead = DeadLetterPublisher(cfg.dead_letter.topic) if cfg.dead_letter.topic else None
        self.watcher = w = Watcher(cfg, self.specs, sink, self.metrics, dead, self.stop, self.pipelines)
        delay = cfg.retry.initial_seconds
        while not self.stop.is_set():  # the state ConfigMap must be readable before anything is acked
            try:
                w.load_state()
                break
            except Exception as exc:  # noqa: BLE001
                LOG.warning("cannot read the state ConfigMap yet; retrying", extra={"error": str(exc)[:300]})
                self.stop.wait(delay)
                delay = min(delay * 2, cfg.retry.max_seconds)
        if self.stop.is_set():
            return
        self._loop("debounce", 0.5, w.fire_due)
        self._loop("ledger", cfg.ledger_flush_seconds, w.flush_ledger)
        if any(t.concurrency == "Forbid" for t in cfg.triggers) or (
                cfg.sources.requests and cfg.sources.requests.concurrency == "Forbid"):
            self._loop("queue", cfg.queue_check_seconds, w.drain_queue)
        if cfg.sources.poll:
            self.poller = Poller(cfg.sources.poll, w, cfg.triggers)
            t = threading.Thread(target=self.poller.run, args=(self.stop,), name="poll", daemon=True)
            t.start()
            self.threads.append(t)
        if cfg.sources.pubsub:
            self.pullers.append(PubSubPuller(cfg.sources.pubsub, w.on_notification, "notifications"))
        if cfg.sources.requests:
            self.pullers.append(PubSubPuller(cfg.sources.requests, w.on_request, "requests"))
        for p in self.pullers:
            p.start()
        self.started = True
        self.metrics.ready.set(1)
        LOG.info("watcher started", extra={"triggers": [t.name for t in cfg.triggers], "jobs": list(self.specs),
                                           "namespace": cfg.namespace})

    def shutdown(self) -> None:
        if getattr(self, "_shut", False):
            return
        self._shut = True
        LOG.info("stopping: no new messages; finishing in-flight work")
        self.stop.set()
        self.metrics.ready.set(0)
        for p in self.pullers:
            p.stop()
        if self.watcher is not None:
            released = self.watcher.release_held()
            try:
                self.watcher.flush_ledger()
            except Exception as exc:  # noqa: BLE001 - the jobs remain the ledger
                LOG.warning("final ledger flush failed", extra={"error": str(exc)[:200]})
            LOG.info("stopped", extra={"released": released})
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
