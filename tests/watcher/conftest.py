"""Harness for the watcher's integration tests: the GCS/Pub/Sub emulators, the local control plane,
and the watcher run as a real process (`python -m jobgen.cli watch`)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen.localcluster.testing import wait_for
from tests.conftest import preserved_environ

REPO = Path(__file__).resolve().parents[2]


class WatcherProc:
    """One `jobgen watch` process; its JSON log goes to a file."""

    def __init__(self, case: Case, config: Path, kubeconfig: str, tag: str) -> None:
        self.case = case
        self.port_file = case.dir / f"port-{tag}"
        self.port_file.unlink(missing_ok=True)
        self.log_path = case.dir / f"watcher-{tag}.log"
        env = {**os.environ, **case.env.info.env(), "JOBGEN_WATCH_PORT_FILE": str(self.port_file)}
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobgen.cli", "watch", "--config", str(config), "--kubeconfig", kubeconfig],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        self.port = 0

    def wait_ready(self, timeout: float = 60) -> WatcherProc:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"watcher exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if not self.port and self.port_file.exists() and self.port_file.read_text().strip():
                self.port = int(self.port_file.read_text())
            return bool(self.port) and self.http("/readyz")[0] == 200

        wait_for(ready, timeout, "watcher /readyz")
        return self

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError as e:
            return 0, str(e)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        code, text = self.http("/metrics")
        assert code == 200, text
        total = 0.0
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    total += s.value
        return total

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.log.close()


class TcpGate:
    """A TCP forwarder in front of the apiserver that the test can take down and bring back: an
    apiserver outage as the watcher sees it (connections refused), without stopping the shared
    apiserver. ``kubeconfig`` is a copy of the cluster's pointing at the gate."""

    def __init__(self, kubeconfig: str, tmp: Path) -> None:
        doc = yaml.safe_load(Path(kubeconfig).read_text())
        server = doc["clusters"][0]["cluster"]["server"]
        hostport = server.split("://", 1)[1].rstrip("/")
        host, port = hostport.rsplit(":", 1)
        self.target = (host, int(port))
        self.host = host.strip("[]")
        probe = socket.socket()
        probe.bind((self.host, 0))
        self.port = probe.getsockname()[1]
        probe.close()
        for c in doc["clusters"]:
            c["cluster"]["server"] = f"https://{host}:{self.port}"  # same host: the serving cert still matches
        self.kubeconfig = str(tmp / f"gate-{self.port}.kubeconfig")
        Path(self.kubeconfig).write_text(yaml.safe_dump(doc))
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.lock = threading.Lock()
        self.up()

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(64)
        self.listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        with self.lock:
            if self.listener is not None:
                self.listener.close()
                self.listener = None
            for c in self.conns:
                with contextlib.suppress(OSError):
                    c.shutdown(socket.SHUT_RDWR)
                c.close()
            self.conns.clear()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not ls:
                    client.close()
                    upstream.close()
                    return
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


class Env:
    def __init__(self, info: Any, cluster: Any, tmp: Path) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import pubsub_v1, storage

        self.info = info
        self.cluster = cluster
        self.tmp = tmp
        for k, v in info.env().items():
            os.environ[k] = v
        self.gcs = storage.Client(project=info.project, credentials=AnonymousCredentials())
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = f"projects/{info.project}/topics/{info.topic}"

    def subscription(
        self, name: str, topic: str | None = None, dead_letter_topic: str | None = None, max_attempts: int = 5
    ) -> str:
        path = self.subscriber.subscription_path(self.info.project, name)
        request: dict[str, Any] = {"name": path, "topic": topic or self.topic, "ack_deadline_seconds": 10}
        if dead_letter_topic:
            request["dead_letter_policy"] = {
                "dead_letter_topic": dead_letter_topic,
                "max_delivery_attempts": max_attempts,
            }
        self.subscriber.create_subscription(request=request)
        return path

    def new_topic(self, name: str) -> str:
        path = self.publisher.topic_path(self.info.project, name)
        self.publisher.create_topic(name=path)
        return path

    def case(self, **trigger: Any) -> Case:
        return Case(self, **trigger)


def cpu_spec(namespace: str) -> dict[str, Any]:
    """cpu-ddp, suspended (the operator creates no pods: the tests count jobs, not pods)."""
    spec = yaml.safe_load((REPO / "jobs" / "cpu-ddp.yaml").read_text())
    spec["namespace"] = namespace
    spec["runPolicy"] = {**spec.get("runPolicy", {}), "suspend": True}
    return spec


class Case:
    """One scenario: its own namespace, data bucket, state bucket, subscriptions and config file."""

    def __init__(
        self,
        env: Env,
        requests: bool = False,
        dead_letter: bool = True,
        sources: dict | None = None,
        pubsub: dict | None = None,
        sub_dead_letter: bool = False,
        **trigger: Any,
    ) -> None:
        self.env = env
        uid = uuid.uuid4().hex[:8]
        self.dir = env.tmp / f"case-{uid}"
        self.dir.mkdir()
        self.ns = env.cluster.create_namespace("w")
        self.bucket = f"data-{uid}"
        env.gcs.create_bucket(self.bucket)
        self.state_bucket = f"state-{uid}"
        env.gcs.create_bucket(self.state_bucket)
        # sub_dead_letter: the subscription dead-letters after 5 delivery attempts (Pub/Sub's policy,
        # as terraform sets it up, with its minimum attempts), into a topic the test reads.
        self.sub_dl_topic = env.new_topic(f"subdl-{uid}") if sub_dead_letter else None
        self.sub_dl_sub = env.subscription(f"subdl-{uid}", self.sub_dl_topic) if self.sub_dl_topic else None
        self.sub = env.subscription(f"notes-{uid}", dead_letter_topic=self.sub_dl_topic)
        self.tap = env.subscription(f"tap-{uid}")  # what the test itself sees of the notifications
        (self.dir / "job.yaml").write_text(yaml.safe_dump(cpu_spec(self.ns)))
        trig = {
            "name": "data",
            "job": "train",
            "bucket": self.bucket,
            "prefix": "mnist/",
            "concurrency": "Allow",
            **trigger,
        }
        srcs = (
            sources
            if sources is not None
            else {
                "pubsub": {"subscription": self.sub, "maxMessages": 100, "leaseExtensionSeconds": 10, **(pubsub or {})}
            }
        )
        cfg: dict[str, Any] = {
            "namespace": self.ns,
            "state": {"bucket": self.state_bucket},
            "jobs": {"train": {"file": "job.yaml"}},
            "triggers": [trig],
            "sources": dict(srcs),
            "server": {"host": "127.0.0.1", "port": 0},
            "retry": {"initialSeconds": 0.2, "maxSeconds": 2},
            "pendingCheckSeconds": 1,
            "queueCheckSeconds": 1,
        }
        if requests:
            self.req_topic = env.new_topic(f"req-{uid}")
            self.req_sub = env.subscription(f"req-{uid}", self.req_topic)
            cfg["sources"]["requests"] = {"subscription": self.req_sub, "leaseExtensionSeconds": 10}
        if dead_letter:
            self.dl_topic = env.new_topic(f"dl-{uid}")
            self.dl_sub = env.subscription(f"dl-{uid}", self.dl_topic)
            cfg["deadLetter"] = {"topic": self.dl_topic}
        self.config = self.dir / "watcher.yaml"
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        self.procs: list[WatcherProc] = []

    def start(self, kubeconfig: str | None = None, ready: bool = True) -> WatcherProc:
        p = WatcherProc(self, self.config, kubeconfig or self.env.cluster.kubeconfig, str(len(self.procs)))
        self.procs.append(p)
        return p.wait_ready() if ready else p

    def upload(self, name: str, data: bytes = b"") -> int:
        blob = self.env.gcs.bucket(self.bucket).blob(name)
        blob.upload_from_string(data)
        return int(blob.generation)

    def jobs(self) -> list[dict[str, Any]]:
        return self.env.cluster.get("pytorchjobs", namespace=self.ns)["items"]

    def claims(self) -> list[str]:
        return [b.name for b in self.env.gcs.list_blobs(self.state_bucket, prefix="claims/")]

    def edit_config(self, **changes: Any) -> None:
        cfg = yaml.safe_load(self.config.read_text())
        cfg.update(changes)
        self.config.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def tap_messages(self, want: int, timeout: float = 30) -> list[Any]:
        return self._drain(self.tap, want, timeout)

    def _drain(self, subscription: str, want: int, timeout: float) -> list[Any]:
        """Pull and ack until ``want`` messages arrived or ``timeout`` passed."""
        got: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(got) < want and time.monotonic() < deadline:
            resp = self.env.subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
            if resp.received_messages:
                self.env.subscriber.acknowledge(
                    subscription=subscription, ack_ids=[m.ack_id for m in resp.received_messages]
                )
            got.extend(m.message for m in resp.received_messages)
        return got

    def publish(self, data: bytes, topic: str | None = None, **attrs: str) -> str:
        return self.env.publisher.publish(topic or self.env.topic, data, **attrs).result(timeout=30)

    def dead_letters(self, want: int, timeout: float = 30) -> list[Any]:
        return self._drain(self.dl_sub, want, timeout)

    def subscription_dead_letters(self, timeout: float = 10) -> list[Any]:
        """What Pub/Sub itself dead-lettered (delivery attempts exhausted)."""
        assert self.sub_dl_sub is not None
        return self._drain(self.sub_dl_sub, 10**6, timeout)

    def stop_all(self) -> None:
        for p in self.procs:
            if p.proc.poll() is None:
                p.terminate()
        # Subscriptions left on the shared notification topic would keep collecting every later
        # test's notifications and slow the emulator down.
        for sub in (self.sub, self.tap, getattr(self, "req_sub", None), getattr(self, "dl_sub", None), self.sub_dl_sub):
            if sub:
                with contextlib.suppress(Exception):  # best effort
                    self.env.subscriber.delete_subscription(subscription=sub)


@pytest.fixture(scope="package")
def wenv(emulators, local_cluster, tmp_path_factory):
    """The emulators' variables are set in this process for tests/watcher and removed after it."""
    with preserved_environ():
        yield Env(emulators, local_cluster, tmp_path_factory.mktemp("watcher"))


@pytest.fixture
def case_factory(wenv):
    cases: list[Case] = []

    def make(**kw: Any) -> Case:
        c = wenv.case(**kw)
        cases.append(c)
        return c

    yield make
    for c in cases:
        c.stop_all()
