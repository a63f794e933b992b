"""`make demo` end to end in fast mode, on its own cluster and emulators in temporary state dirs:
data lands in GCS → the watcher creates a PyTorchJob → real DDP training → registry → promotion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_retrains_on_each_data_version_and_promotes(tmp_path):
    env = {
        **os.environ,
        "JOBGEN_DEMO_DIR": str(tmp_path / "demo"),
        "JOBGEN_LOCALCLUSTER_DIR": str(tmp_path / "cluster"),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "jobgen.demo", "--fast", "--timeout", "300"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        out = proc.stdout
        assert proc.returncode == 0, out + proc.stderr
        assert "Traceback" not in out + proc.stderr
        rows = {}
        for line in out.splitlines():
            m = re.match(r"^(v[12])\s+(\S+)\s+(\S+)\s+\d+\s+(\S+)\s+([0-9.]+)\s+(yes|no)$", line)
            if m:
                rows[m.group(1)] = m.groups()[1:]
        assert set(rows) == {"v1", "v2"}, out
        assert all(r[1] == "Succeeded" for r in rows.values())

        # The registry, read independently of the demo: both versions published, LATEST the best one.
        emu = subprocess.run(
            [sys.executable, "-m", "jobgen.emulators", "env", "--state-dir", str(tmp_path / "demo" / "emulators")],
            capture_output=True,
            text=True,
            check=True,
        )
        gcs_env = dict(re.findall(r"export (\w+)=(\S+)", emu.stdout))
        script = (
            "import json; from google.cloud import storage; from google.auth.credentials import "
            "AnonymousCredentials as A; c = storage.Client(project='demo-project', credentials=A()); "
            "print(json.dumps({b.name: (b.download_as_text() if b.name.endswith(('LATEST', 'metrics.json', "
            "'lineage.json')) else b.size) for b in c.list_blobs('demo-models')}))"
        )
        objects = json.loads(
            subprocess.run(
                [sys.executable, "-c", script],
                env={**os.environ, **gcs_env},
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        versions = {name.split("/")[1] for name in objects if name.count("/") == 2}
        assert {rows["v1"][2], rows["v2"][2]} <= versions
        metrics = {v: json.loads(objects[f"mnist/{v}/metrics.json"])["val_accuracy"] for v in versions}
        latest = json.loads(objects["mnist/LATEST"])
        assert latest["value"] == max(metrics.values()) and metrics[latest["version"]] == latest["value"]
        for data_version, (job, _, model_version, _, _) in rows.items():
            lineage = json.loads(objects[f"mnist/{model_version}/lineage.json"])
            assert lineage["job_name"] == job
            assert lineage["world_size"] == 2
            assert f"mnist/{data_version}" in json.dumps(lineage["data"])
            assert objects[f"mnist/{model_version}/model.pt"] > 0
        assert objects["mnist/curves.png"] > 0 and (tmp_path / "demo" / "curves.png").exists()

        # The prediction step: its summary row, then the outputs and the manifest in demo-predictions.
        pred = re.search(
            r"^(mnist-predict-\S+)\s+(\S+)\s+\d+\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+[0-9.]+$",
            out,
            re.MULTILINE,
        )
        assert pred is not None, out
        pjob, pstate, pversion, *counts = pred.groups()
        assert pstate == "Complete" and pversion == latest["version"], out
        assert counts == ["4", "3", "1", "300"], out  # inputs, predicted, quarantined (corrupt.npy), examples
        assert "duplicate submission created nothing" in out and "sample predictions:" in out
        texts = (
            "import json; from google.cloud import storage; from google.auth.credentials import "
            "AnonymousCredentials as A; c = storage.Client(project='demo-project', credentials=A()); "
            "print(json.dumps({b.name: b.download_as_text() for b in c.list_blobs('demo-predictions') "
            "if b.name.endswith(('.json', '.jsonl', '_SUCCESS'))}))"
        )
        preds = json.loads(
            subprocess.run(
                [sys.executable, "-c", texts], env={**os.environ, **gcs_env}, capture_output=True, text=True, check=True
            ).stdout
        )
        manifest = json.loads(preds[f"mnist/{pjob}/manifest.json"])
        assert f"mnist/{pjob}/_SUCCESS" in preds
        assert manifest["model"]["version"] == latest["version"]
        assert manifest["counts"] == {"inputs": 4, "predicted": 3, "quarantined": 1, "examples": 300}
        assert [q["name"] for q in manifest["quarantined"]] == ["corrupt.npy"]
        rows_out = [
            json.loads(line)
            for name, text in preds.items()
            if name.startswith(f"mnist/{pjob}/predictions/")
            for line in text.splitlines()
        ]
        assert len(rows_out) == 300 and {r["model_version"] for r in rows_out} == {latest["version"]}

        # The jobs the watcher created are in the cluster with the states the table reports.
        jobs = subprocess.run(
            [sys.executable, "-m", "jobgen.cli", "status", "-n", "training", "-o", "json"],
            env={**os.environ, "KUBECONFIG": str(tmp_path / "cluster" / "kubeconfig")},
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        )
        states = {j["name"]: j["state"] for j in json.loads(jobs.stdout)}
        for job, state, *_ in rows.values():
            assert states[job] == state
        assert states[pjob] == "Complete"  # jobgen status lists the prediction Job too
    finally:
        down = subprocess.run(
            [sys.executable, "-m", "jobgen.demo", "down"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert down.returncode == 0, down.stderr
