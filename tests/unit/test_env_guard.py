"""The suite's guard (tests/conftest.py): a test package that leaves os.environ changed errors, and the
next package starts from the environment the session started with."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import env_changes

REPO = Path(__file__).resolve().parents[2]


def test_env_changes_names_added_removed_and_changed_variables():
    assert env_changes({"A": "1", "B": "2"}, {"A": "1", "B": "3", "C": "4"}) == ["B", "C"]
    assert env_changes({"A": "1"}, {}) == ["A"]
    assert env_changes({"A": "1"}, {"A": "1"}) == []


def test_a_package_that_leaks_an_environment_variable_errors_and_the_next_one_starts_clean(tmp_path: Path):
    (tmp_path / "conftest.py").write_text("from tests.conftest import pytest_runtest_teardown, pytest_sessionstart\n")
    leaky, clean = tmp_path / "tests" / "leaky", tmp_path / "tests" / "clean"
    for d in (leaky, clean):
        d.mkdir(parents=True)
    (leaky / "test_leak.py").write_text(
        "import os, pytest\n"
        "@pytest.fixture(scope='module')\n"
        "def emulator():\n"
        "    os.environ['STORAGE_EMULATOR_HOST'] = 'http://10.0.0.1:1'\n"
        "    yield\n"
        "def test_uses_it(emulator):\n"
        "    assert os.environ['STORAGE_EMULATOR_HOST']\n"
    )
    (clean / "test_later.py").write_text(
        "import os\ndef test_sees_no_leak():\n    assert 'STORAGE_EMULATOR_HOST' not in os.environ\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), "tests"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "tests/leaky left the process environment changed: STORAGE_EMULATOR_HOST" in out, out
    assert "2 passed, 1 error" in out, out


def test_a_variable_a_library_sets_for_the_process_is_not_a_leak():
    assert env_changes({}, {"TORCHINDUCTOR_CACHE_DIR": "/tmp/torchinductor_root"}) == []
