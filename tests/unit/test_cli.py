"""The command line, run as users run it: a subprocess, checking exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO

HEAVY = ("torch", "kfp", "kubernetes", "google.cloud", "jsonschema", "tensorflow")


def jobgen(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "jobgen.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        input=stdin,
        env=env,
        timeout=60,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str, code: int = 2) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_render_yaml_and_json():
    out = jobgen("render", "jobs/cpu-ddp.yaml")
    assert out.returncode == 0, out.stderr
    manifest = yaml.safe_load(out.stdout)
    assert manifest["kind"] == "PyTorchJob" and manifest["metadata"]["name"] == "cpu-ddp"
    as_json = json.loads(jobgen("render", "jobs/cpu-ddp.yaml", "-o", "json").stdout)
    assert as_json == manifest


def test_render_from_stdin():
    out = jobgen("render", "-", stdin=(REPO / "jobs/cpu-ddp.yaml").read_text())
    assert out.returncode == 0 and "cpu-ddp" in out.stdout


def test_render_set_and_param():
    out = jobgen(
        "render",
        "jobs/cpu-ddp.yaml",
        "--set",
        "replicas.Worker.replicas=3",
        "--set-string",
        "env.CODE=007",
        "-p",
        "lr=0.2",
        "-o",
        "json",
    )
    m = json.loads(out.stdout)
    worker = m["spec"]["pytorchReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3
    c = worker["template"]["spec"]["containers"][0]
    assert "--lr=0.2" in c["args"] and {"name": "CODE", "value": "007"} in c["env"]


def test_validate_all_examples():
    out = jobgen("validate", *sorted(str(p.relative_to(REPO)) for p in (REPO / "jobs").glob("*.yaml")))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": valid ") == 4


def test_validate_manifest_file(tmp_path):
    manifest = yaml.safe_load(jobgen("render", "jobs/cpu-ddp.yaml").stdout)
    manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"] = "main"
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert_user_error(jobgen("validate", str(path)), "manifest.yaml", "containers", "'pytorch'")


@pytest.mark.parametrize(
    "edit,needles",
    [
        ({"replicas": {"Worker": {"replicas": -1}}}, ["replicas.Worker.replicas", "greater than or equal to 1"]),
        ({"resources": {"gpu": 2}}, ["resources.gpu", "placement.accelerator"]),
        ({"storage": {"data": "gs:/bucket"}}, ["storage.data", "gs://"]),
        ({"name": "Invalid_Name"}, ["name", "DNS-1035"]),
        ({"name": "n" * 70}, ["name", "at most"]),
        ({"unknownField": 1}, ["unknownField", "unknown field"]),
        ({"replicas": {"Worker": {"replicas": "many"}}}, ["replicas.Worker.replicas", "integer"]),
    ],
)
def test_bad_specs_name_file_and_field(write_spec, edit, needles):
    doc = yaml.safe_load((REPO / "jobs/cpu-ddp.yaml").read_text())
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            for k, v in value.items():
                doc[key][k] = {**doc[key].get(k, {}), **v} if isinstance(v, dict) else v
        else:
            doc[key] = value
    path = write_spec(doc, "bad.yaml")
    for cmd in ("render", "validate", "submit"):
        assert_user_error(jobgen(cmd, str(path)), "bad.yaml", *needles)


def test_set_on_missing_path():
    assert_user_error(
        jobgen("render", "jobs/cpu-ddp.yaml", "--set", "placement.gpu=1"),
        "jobs/cpu-ddp.yaml",
        "placement.gpu",
        "no such field",
        "accelerator",
    )


def test_set_without_equals():
    proc = jobgen("render", "jobs/cpu-ddp.yaml", "--set", "replicas")
    assert_user_error(proc, "PATH=VALUE")


def test_unreadable_file():
    assert_user_error(jobgen("validate", "jobs/does-not-exist.yaml"), "jobs/does-not-exist.yaml", "cannot read")


def test_submit_client_dry_run_needs_no_cluster(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}
    out = jobgen("submit", "jobs/cpu-ddp.yaml", "--dry-run=client", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pytorchjob.kubeflow.org/cpu-ddp serverside-applied (dry run)"


def test_unreachable_cluster_is_one_line(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        textwrap.dedent("""
        apiVersion: v1
        kind: Config
        clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
        users: [{name: u, user: {token: t}}]
        contexts: [{name: gke-prod, context: {cluster: c, user: u, namespace: training}}]
        current-context: gke-prod
    """)
    )
    for args in (["submit", "jobs/cpu-ddp.yaml"], ["status"], ["delete", "x"]):
        proc = jobgen(*args, "--kubeconfig", str(kubeconfig))
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "'gke-prod'" in lines[0] and "127.0.0.1:9" in lines[0], proc.stderr


def test_unknown_context(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: c, user: u}}]\ncurrent-context: a\n"
    )
    proc = jobgen("status", "--kubeconfig", str(kubeconfig), "--context", "prod")
    assert_user_error(proc, "'prod' not found", "a", code=1)


def test_help_and_import_stay_light():
    code = (
        "import sys, jobgen, jobgen.cli\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner().invoke(jobgen.cli.main, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in %r or m.startswith('google.cloud')]\n"
        "print(','.join(heavy))\n" % ([h.split(".")[0] for h in HEAVY if h != "google.cloud"],)
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_render_does_not_import_cluster_or_validation_libraries():
    code = (
        "import sys\nfrom click.testing import CliRunner\nimport jobgen.cli\n"
        "r = CliRunner().invoke(jobgen.cli.main, ['render', 'jobs/cpu-ddp.yaml'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'torch', 'kfp', 'jsonschema')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


def test_schemas_are_up_to_date():
    proc = subprocess.run(
        [sys.executable, "-m", "jobgen.schemagen", "--check"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr


def test_console_script_installed():
    exe = Path(sys.executable).parent / "jobgen"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and "jobgen, version" in proc.stdout


def test_demo_cluster_choices():
    for value, needle in (("gke", "expected local (default) or kind"), ("kind", "needs a running Docker engine")):
        proc = subprocess.run(
            [sys.executable, "-m", "jobgen.demo", "--fast"],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "DEMO_CLUSTER": value, "PATH": "/usr/bin:/bin" if value == "gke" else "/nonexistent"},
        )
        assert proc.returncode == 2 and needle in proc.stdout and "Traceback" not in proc.stderr
