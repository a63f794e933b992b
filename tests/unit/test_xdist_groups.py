"""`make test` runs pytest on two xdist workers: tests/watcher (mostly waiting on the Pub/Sub
emulator) on one, everything else on the other (tests/conftest.py, pytest_xdist_make_scheduler)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_watcher_tests_run_on_one_worker_and_the_rest_on_the_other():
    files = ["tests/unit/test_names.py", "tests/unit/test_status.py", "tests/watcher/test_units.py"]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-v", "-p", "no:cacheprovider", "-k", "not hostile", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    ).stdout
    workers: dict[str, set[str]] = {}
    for worker, path in re.findall(r"^\[(gw\d)\] \[ *\d+%\] PASSED (tests/\S+?)::", out, re.M):
        workers.setdefault("watcher" if path.startswith("tests/watcher/") else "rest", set()).add(worker)
    assert workers.keys() == {"watcher", "rest"}, out[-3000:]
    assert len(workers["watcher"]) == 1 and len(workers["rest"]) == 1, workers
    assert workers["watcher"] != workers["rest"], workers
