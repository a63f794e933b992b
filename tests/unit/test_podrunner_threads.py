"""The pod runner's loop thread and shutdown() from another thread (seen in a full run: shutdown
cleared `running` while a pass was deleting from it, and the loop thread died with KeyError)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from jobgen.errors import ClusterError
from jobgen.podrunner import PodRunner


def pod(name: str, code: str = "import time; time.sleep(60)") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {}},
        "status": {"phase": "Running"},
        "spec": {"containers": [{"name": "pytorch", "command": [sys.executable, "-c", code]}]},
    }


class BlockingCluster:
    """Two Running pods whose processes exit at once; reporting the first exit blocks until released."""

    def __init__(self) -> None:
        self.pods = [pod("p-0", "raise SystemExit(3)"), pod("p-1", "raise SystemExit(3)")]
        self.reporting = threading.Event()
        self.release = threading.Event()
        self.reported: list[str] = []

    def list_objects(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return self.pods

    def patch(self, api_version: str, kind: str, name: str, *args: Any) -> dict[str, Any]:
        self.reported.append(name)
        if len(self.reported) == 1:
            self.reporting.set()
            assert self.release.wait(30)
        return {}


def test_shutdown_during_a_pass_neither_crashes_the_pass_nor_loses_a_report(tmp_path: Path) -> None:
    cluster = BlockingCluster()
    runner = PodRunner(cluster, "training", tmp_path)
    runner.step()
    for run in runner.running.values():
        run.process.wait(30)
    errors: list[BaseException] = []

    def pass_() -> None:
        try:
            runner.step()
        except BaseException as exc:  # what would end the loop thread
            errors.append(exc)

    loop = threading.Thread(target=pass_)
    loop.start()
    assert cluster.reporting.wait(10)  # the pass is reporting p-0; p-1 is next
    stopper = threading.Thread(target=runner.shutdown)
    stopper.start()
    stopper.join(0.5)  # without the lock, shutdown clears `running` here, under the pass
    cluster.release.set()
    loop.join(30)
    stopper.join(30)
    assert not errors, errors
    assert sorted(cluster.reported) == ["p-0", "p-1"] and runner.done == {"p-0": 3, "p-1": 3}
    assert runner.running == {}


class FlakyCluster:
    def __init__(self) -> None:
        self.calls = 0

    def list_objects(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        self.calls += 1
        if self.calls == 1:
            raise ClusterError("the apiserver is unreachable")
        return [pod("p-0")]

    def patch(self, *args: Any) -> dict[str, Any]:
        return {}


def test_the_loop_survives_a_failed_pass(tmp_path: Path) -> None:
    cluster = FlakyCluster()
    runner = PodRunner(cluster, "training", tmp_path, poll=0.05)
    loop = threading.Thread(target=runner.run)
    loop.start()
    try:
        for _ in range(200):
            if "p-0" in runner.running:
                break
            threading.Event().wait(0.05)
        assert "p-0" in runner.running and cluster.calls >= 2
    finally:
        runner.shutdown()
        loop.join(30)
    assert not loop.is_alive()
