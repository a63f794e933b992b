"""Process tracking of the local cluster: pidfiles, stop only what was started, CLI errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from jobgen.localcluster import procs
from jobgen.localcluster.bins import REPO_ROOT


def test_start_stop_tracks_exactly_the_started_process(tmp_path: Path) -> None:
    sleep = shutil.which("sleep")
    assert sleep
    pid = procs.start("sleeper", [sleep, "300"], tmp_path)
    bystander = subprocess.Popen([sleep, "300"])
    try:
        (pf,) = procs.pidfiles(tmp_path)
        assert pf.name == "sleeper" and pf.read() == (pid, os.path.realpath(sleep))
        assert procs.running(pid, sleep)
        assert procs.stop(pf, timeout=5)
        assert not procs.running(pid, sleep)
        assert not pf.path.exists()
        assert bystander.poll() is None  # same executable, not ours: untouched
    finally:
        bystander.kill()
        bystander.wait()


def test_stale_pidfile_does_not_kill_a_reused_pid(tmp_path: Path) -> None:
    """A pidfile whose pid now runs another program is dropped, not signalled."""
    other = subprocess.Popen([shutil.which("sleep") or "sleep", "300"])
    try:
        (tmp_path / "pids").mkdir()
        pidfile = tmp_path / "pids" / "etcd.pid"
        pidfile.write_text(f"{other.pid}\n/nonexistent/etcd-v0\n")
        assert not procs.stop(procs.Pidfile(pidfile))
        assert other.poll() is None
        assert not pidfile.exists()
    finally:
        other.kill()
        other.wait()


def test_cli_env_and_status_when_down(tmp_path: Path) -> None:
    env = {**os.environ, "JOBGEN_LOCALCLUSTER_DIR": str(tmp_path / "none")}
    for cmd, want in (("env", "not up"), ("status", "down")):
        proc = subprocess.run(
            [sys.executable, "-m", "jobgen.localcluster", cmd], env=env, cwd=REPO_ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 1
        assert want in (proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr


def test_missing_go_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "JOBGEN_CACHE": str(tmp_path / "cache"),
        "PATH": "/nonexistent",
        "JOBGEN_LOCALCLUSTER_DIR": str(tmp_path / "state"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.localcluster", "up"], env=env, cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == "localcluster: go not found: install Go >= 1.26 to build the local control plane"
