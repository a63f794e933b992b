"""Start background processes with pidfiles, and stop exactly those."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# Listening ports are picked below the kernel's ephemeral range (32768-60999 by default):
# a port from that range, free when picked, can be taken by an outgoing connection
# (e.g. the apiserver's to etcd) before the process meant to listen on it starts.
PORT_RANGE = (20000, 32000)


def free_port(taken: set[int] | None = None) -> int:
    """A loopback TCP port that is free now, outside the ephemeral range and not in `taken`."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = random.randint(*PORT_RANGE)
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise OSError(f"no free port in {PORT_RANGE}")


@dataclass(frozen=True)
class Pidfile:
    """`<state>/pids/<name>.pid` holds the pid and the executable it runs."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    def read(self) -> tuple[int, str] | None:
        try:
            pid_text, exe = self.path.read_text().splitlines()[:2]
            return int(pid_text), exe
        except (OSError, ValueError):
            return None


def _exe_of(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/exe").readlink()).removesuffix(" (deleted)")
    except OSError:
        return None


def _state_of(pid: int) -> str | None:
    try:
        # /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def state_of(pid: int) -> str | None:
    """The process state letter (R, S, Z, ...) of `pid`, None if there is no such process."""
    return _state_of(pid)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def running(pid: int, exe: str) -> bool:
    """True while `pid` is alive and still runs `exe` (guards against pid reuse)."""
    _reap(pid)
    state = _state_of(pid)
    if state is None or state in ("Z", "X"):
        return False
    return _exe_of(pid) == os.path.realpath(exe)


def start(name: str, argv: list[str], state_dir: Path, env: dict[str, str] | None = None) -> int:
    """Start `argv` in its own session, log to <state>/logs/<name>.log, write its pidfile."""
    logs = state_dir / "logs"
    pids = state_dir / "pids"
    logs.mkdir(parents=True, exist_ok=True)
    pids.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            cwd=state_dir,
        )
    (pids / f"{name}.pid").write_text(f"{proc.pid}\n{os.path.realpath(argv[0])}\n")
    return proc.pid


def pidfiles(state_dir: Path) -> list[Pidfile]:
    d = state_dir / "pids"
    return sorted((Pidfile(p) for p in d.glob("*.pid")), key=lambda p: p.path.stat().st_mtime) if d.is_dir() else []


def stop(pidfile: Pidfile, timeout: float = 15.0) -> bool:
    """SIGTERM the recorded process (only if it still runs the recorded exe), SIGKILL after `timeout`.

    Returns True if a process was stopped. The pidfile is removed either way."""
    entry = pidfile.read()
    stopped = False
    if entry is not None:
        pid, exe = entry
        if running(pid, exe):
            _signal(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while running(pid, exe) and time.monotonic() < deadline:
                time.sleep(0.05)
            if running(pid, exe):
                _signal(pid, signal.SIGKILL)
                while running(pid, exe):
                    time.sleep(0.05)
            stopped = True
    pidfile.path.unlink(missing_ok=True)
    return stopped


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError as e:
        if e.errno != errno.ESRCH:
            raise


def log_tail(state_dir: Path, name: str, lines: int = 15) -> str:
    path = state_dir / "logs" / f"{name}.log"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid`` (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in group ``pgid``; reaps our own dead leader."""
    _reap(pgid)
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # A zombie leader keeps the group "alive" for kill(0): look for a live member.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def stop_group(pgid: int, timeout: float = 15.0) -> bool:
    """The one way to stop a process tree jobgen started in its own session: SIGTERM the group,
    SIGKILL what is left after ``timeout`` seconds, and wait until no member lives.

    Returns True if something was running."""
    if not group_alive(pgid):
        return False
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    signal_group(pgid, signal.SIGKILL)
    while group_alive(pgid):
        time.sleep(0.05)
    return True
