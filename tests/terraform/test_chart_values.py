"""What make cluster installs: terraform's generated Helm values (planned with
the mocked provider, terraform/tests/helm_values.tftest.hcl) rendered by helm
with the flags hack/terraform/cluster.sh adds. The watcher and its job run the
project's images and buckets; no placeholder survives."""

from __future__ import annotations

import re
import subprocess
import textwrap
from pathlib import Path

import yaml

from jobgen.localcluster.bins import binaries

from .conftest import REPO, run_tf, skip_or_fail

REGISTRY = "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images"
TAG = "0123456789ab"


def generated_values(workdir: Path) -> str:
    res = run_tf(workdir, "test", "-verbose", "-filter=tests/helm_values.tftest.hcl")
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"\+ watcher_helm_values\s+= <<-EOT\n(.*?)\n\s*EOT\n", res.stdout, re.S)
    assert m, res.stdout[-3000:]
    return textwrap.dedent(m.group(1))


def cluster_sh_helm_flags() -> list[str]:
    """The --set-string flags of cluster.sh's helm upgrade, with its variables filled in."""
    text = (REPO / "hack" / "terraform" / "cluster.sh").read_text()
    flags = re.findall(r'--set-string "([^"]+)"', text)
    assert flags == ["image.tag=$tag", "jobs.train.image=$repository/trainer:$tag"], flags
    out = []
    for f in flags:
        out += ["--set-string", f.replace("$repository", REGISTRY).replace("$tag", TAG)]
    return out


def test_make_cluster_installs_no_placeholder(tf_initialised: Path, tmp_path: Path):
    values = generated_values(tf_initialised)
    doc = yaml.safe_load(values)
    assert doc["gcp"]["stateBucket"] == "jobgen-test-project-jobgen-watcher-state"
    vf = tmp_path / "watcher-values.yaml"
    vf.write_text(values)
    helm = binaries().path("helm")
    if not helm.exists():
        skip_or_fail("helm is not built (make bins)")
    res = subprocess.run(
        [str(helm), "template", "retrain-watcher", str(REPO / "charts" / "retrain-watcher"), "-n", "training",
         "--values", str(vf), *cluster_sh_helm_flags()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rendered = res.stdout
    for placeholder in ("my-project", "example", "ghcr.io"):
        assert placeholder not in rendered, f"{placeholder!r} in what make cluster applies"
    objs = [d for d in yaml.safe_load_all(rendered) if d]
    deploy = next(d for d in objs if d["kind"] == "Deployment")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REGISTRY}/watcher:{TAG}"
    config = next(d for d in objs if d["kind"] == "ConfigMap" and "job-train.yaml" in d.get("data", {}))
    job = yaml.safe_load(config["data"]["job-train.yaml"])
    assert job["image"] == f"{REGISTRY}/trainer:{TAG}"
    assert job["storage"]["output"] == "gs://jobgen-test-project-jobgen-models/retrain"
    assert job["storage"]["checkpoints"] == "gs://jobgen-test-project-jobgen-checkpoints"
    assert job["namespace"] == "training" and job["serviceAccount"] == "jobgen-trainer"
    assert any(d["kind"] == "PodMonitoring" for d in objs), "managed Prometheus scrapes the watcher"


def test_the_chart_defaults_are_placeholders(tmp_path: Path):
    """Without terraform's values the chart renders its placeholders: the check above can fail."""
    helm = binaries().path("helm")
    if not helm.exists():
        skip_or_fail("helm is not built (make bins)")
    vf = tmp_path / "v.yaml"
    vf.write_text(
        yaml.safe_dump(
            {
                "gcp": {
                    "project": "p-123456",
                    "subscription": "projects/p-123456/subscriptions/sub",
                    "dataBucket": "p-123456-data",
                    "stateBucket": "p-123456-watcher-state",
                }
            }
        )
    )
    res = subprocess.run(
        [str(helm), "template", "rw", str(REPO / "charts" / "retrain-watcher"), "-n", "training", "-f", str(vf)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "my-project" in res.stdout
