"""terraform fmt: the committed HCL is canonically formatted."""

from __future__ import annotations

import subprocess

from .conftest import REPO, TF_DIR, require_terraform, tf_env


def test_terraform_fmt_check(tmp_path):
    require_terraform()
    res = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color", str(TF_DIR)],
        capture_output=True,
        text=True,
        env=tf_env(tmp_path),
        cwd=REPO,
        check=False,
    )
    assert res.returncode == 0, (
        "terraform fmt -check found unformatted files (run terraform fmt -recursive terraform):\n"
        f"{res.stdout}{res.stderr}"
    )


def test_fmt_check_catches_bad_formatting(tmp_path):
    """The check above can fail: a mis-indented file is reported."""
    require_terraform()
    bad = tmp_path / "bad.tf"
    bad.write_text('variable "x" {\n      type = string\n}\n')
    res = subprocess.run(
        ["terraform", "fmt", "-check", "-no-color", str(tmp_path)],
        capture_output=True,
        text=True,
        env=tf_env(tmp_path),
        check=False,
    )
    assert res.returncode != 0 and "bad.tf" in res.stdout
