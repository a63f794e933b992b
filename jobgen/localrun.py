"""Run every replica of a PyTorchJob/TFJob as a local process: `jobgen run --local`.

Each replica gets the environment the training-operator v1.9.4 would inject (see
:mod:`jobgen.kubeflow`) plus the container's own env, with one necessary change: addresses
point at 127.0.0.1 and free local ports instead of the job's Services. It is the TorchX-local /
Kubeflow-SDK-local-backend idea: debug a job on CPU (gloo) before spending GPU hours.

Output is streamed with a ``[role-index]`` prefix. When one replica fails, the others are stopped
after a grace period (as torchrun and the operator do), and the run fails with its exit code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from jobgen.errors import UserError
from jobgen.kubeflow import TrainingJob

LOOPBACK = "127.0.0.1"
_PYTHON_NAMES = ("python", "python3", f"python3.{sys.version_info.minor}")


@dataclass
class Replica:
    name: str  # the pod name it stands for, e.g. job-worker-0
    role: str
    index: int
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    exit_code: int | None = None
    started: float = 0.0
    ended: float = 0.0
    pump: threading.Thread | None = field(default=None, repr=False)


class LocalPorts:
    """Maps the job's ``host:port`` endpoints (Service names) to free ports on 127.0.0.1, one each."""

    def __init__(self) -> None:
        self._ports: dict[tuple[str, str], int] = {}

    def __call__(self, host: str, port: str | int) -> int:
        from jobgen.localcluster.procs import free_port

        key = (host, str(port))
        if key not in self._ports:
            self._ports[key] = free_port(set(self._ports.values()))
        return self._ports[key]

    def endpoint(self, endpoint: str) -> str:
        host, _, port = endpoint.rpartition(":")
        return f"{LOOPBACK}:{self(host, port)}"


def localize(env: dict[str, str], ports: LocalPorts) -> dict[str, str]:
    """Point the operator's addresses (MASTER_ADDR/PORT, PET_RDZV_ENDPOINT, TF_CONFIG) at loopback."""
    out = dict(env)
    for addr_key, port_key in (("MASTER_ADDR", "MASTER_PORT"), ("PET_MASTER_ADDR", "PET_MASTER_PORT")):
        if addr_key in out and port_key in out:
            out[port_key] = str(ports(out[addr_key], out[port_key]))
            out[addr_key] = LOOPBACK
    if out.get("PET_RDZV_ENDPOINT"):
        out["PET_RDZV_ENDPOINT"] = ports.endpoint(out["PET_RDZV_ENDPOINT"])
    if out.get("TF_CONFIG"):
        config = json.loads(out["TF_CONFIG"])
        config["cluster"] = {
            role: [ports.endpoint(e) for e in endpoints] for role, endpoints in config.get("cluster", {}).items()
        }
        out["TF_CONFIG"] = json.dumps(config, separators=(",", ":"))
    return out


def local_argv(command: list[str], args: list[str], python: str = sys.executable) -> list[str]:
    """The container's command line, with a leading ``python`` meaning this interpreter."""
    argv = [*command, *args]
    if argv and argv[0] in _PYTHON_NAMES:
        argv[0] = python
    return argv


def plan(manifest: dict[str, Any], source: str | None = None, python: str = sys.executable) -> list[Replica]:
    """The local processes for ``manifest``: argv and env of every replica."""
    ports = LocalPorts()
    job = TrainingJob(manifest)
    out = []
    for role, index in job.replicas():
        container = job.container(role)
        if not container.get("command"):
            raise UserError.one(
                f"{role}.command",
                "a local run needs the container's command (the image's entrypoint is not known outside the image)",
                source,
            )
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" not in item:
                raise UserError.one(
                    f"{role}.env.{item.get('name')}", "valueFrom is not supported in local runs", source
                )
            env[item["name"]] = item["value"]
        env.update(localize(job.operator_env(role, index), ports))
        env["HOSTNAME"] = job.pod_name(role, index)  # as the kubelet sets it
        out.append(
            Replica(
                name=env["HOSTNAME"],
                role=role,
                index=index,
                argv=local_argv(container["command"], container.get("args") or [], python),
                env=env,
            )
        )
    return out


def _pump(stream: IO[bytes], prefix: bytes, sink: IO[bytes], lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            sink.write(prefix + line)
            sink.flush()


def _stop(replica: Replica, sig: int) -> None:
    from jobgen.localcluster.procs import signal_group

    if replica.process is not None and replica.process.poll() is None:
        signal_group(replica.process.pid, sig)


def run(
    replicas_: list[Replica],
    timeout: float | None = None,
    grace: float = 10.0,
    sink: IO[bytes] | None = None,
    cwd: str | None = None,
) -> int:
    """Start every replica, stream their output, and return the job's exit code (0 = Succeeded)."""
    sink = sink or sys.stdout.buffer
    lock = threading.Lock()
    width = max(len(f"{r.role.lower()}-{r.index}") for r in replicas_)
    try:
        for r in replicas_:
            r.started = time.monotonic()
            r.process = subprocess.Popen(
                r.argv,
                env={**os.environ, **r.env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
            prefix = f"[{r.role.lower()}-{r.index}]".ljust(width + 3).encode()
            r.pump = threading.Thread(target=_pump, args=(r.process.stdout, prefix, sink, lock), daemon=True)
            r.pump.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        failed_at = None
        while any(r.process.poll() is None for r in replicas_ if r.process):
            for r in replicas_:
                if r.process and r.exit_code is None and r.process.poll() is not None:
                    r.exit_code, r.ended = r.process.returncode, time.monotonic()
                    if r.exit_code != 0 and failed_at is None:
                        failed_at = time.monotonic()
                        for other in replicas_:
                            _stop(other, signal.SIGTERM)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for r in replicas_:
                    _stop(r, signal.SIGKILL)
            if deadline is not None and time.monotonic() > deadline:
                with lock:
                    sink.write(f"jobgen: timed out after {timeout:.0f}s; stopping every replica\n".encode())
                for r in replicas_:
                    _stop(r, signal.SIGTERM)
                deadline = None
                failed_at = failed_at or time.monotonic()
            time.sleep(0.05)
    finally:
        for r in replicas_:
            _stop(r, signal.SIGKILL)
            if r.process is not None:
                r.process.wait()
                if r.exit_code is None:
                    r.exit_code, r.ended = r.process.returncode, time.monotonic()
            if r.pump is not None:
                r.pump.join(timeout=5)
    failed = sorted((r for r in replicas_ if r.exit_code), key=lambda r: r.ended)
    return container_exit_code(failed[0].exit_code) if failed else 0


def container_exit_code(returncode: int | None) -> int:
    """A process's return code as a container reports it: killed by signal N → 128 + N."""
    if returncode is None:
        return 0
    return returncode if returncode >= 0 else 128 - returncode


def summary(replicas_: list[Replica]) -> str:
    from jobgen.status import table

    rows = [["REPLICA", "EXIT", "SECONDS"]]
    rows += [[r.name, str(container_exit_code(r.exit_code)), f"{r.ended - r.started:.1f}"] for r in replicas_]
    return table(rows)


def describe(replicas_: list[Replica]) -> str:
    """The plan as JSON: what would run, with which env (for --dry-run)."""
    return json.dumps([{"replica": r.name, "argv": r.argv, "env": r.env} for r in replicas_], indent=2)
