"""shellcheck over the scripts behind make cluster/images/destroy/tf-provider."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import HACK, REPO


def test_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    scripts = sorted(str(p.relative_to(REPO)) for p in HACK.glob("*.sh"))
    assert len(scripts) >= 6
    res = subprocess.run(["shellcheck", "-x", *scripts], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout + res.stderr
