"""The BatchPrediction spec: rendering to an Indexed Job, offline validation, hostile specs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen.errors import UserError
from jobgen.predict import load
from jobgen.predict.render import data_key, input_key, job_name, render
from jobgen.predict.spec import glob_regex, split_input
from jobgen.predict.validate import manifest_problems
from jobgen.render import pod_placement

from ..conftest import REPO

EXAMPLES = sorted((REPO / "jobs/predict").glob("*.yaml"))


def spec_doc(**changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "jobs/predict/mnist.yaml").read_text())
    doc.update(changes)
    return doc


def jobgen(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobgen.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={"KUBECONFIG": "/nonexistent", "PATH": "/usr/bin:/bin"},
    )


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_render_to_valid_indexed_jobs(path: Path) -> None:
    spec = load.load(path)
    manifest = render(spec)
    assert manifest_problems(manifest) == []
    job = manifest["spec"]
    assert manifest["apiVersion"] == "batch/v1" and manifest["kind"] == "Job"
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == spec.indexes and job["parallelism"] == spec.parallelism
    assert job["backoffLimitPerIndex"] == spec.backoff_limit_per_index
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    args = pod["containers"][0]["args"]
    assert f"--completions={spec.indexes}" in args
    assert f"--output={spec.output}/{manifest['metadata']['name']}" in args


def test_gpu_placement_is_the_training_placement() -> None:
    spec = load.load(REPO / "jobs/predict/mnist-gpu.yaml")
    pod = render(spec)["spec"]["template"]["spec"]
    selector, tolerations = pod_placement(spec.placement, spec.resources)  # what training jobs get
    assert (
        pod["nodeSelector"]
        == selector
        == {"cloud.google.com/gke-accelerator": "nvidia-l4", "cloud.google.com/gke-spot": "true"}
    )
    assert pod["tolerations"] == tolerations
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    res = pod["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
    assert "--device=cuda" in pod["containers"][0]["args"]
    assert pod["priorityClassName"] == "batch-low"


def test_cpu_prediction_stays_off_gpu_nodes() -> None:
    pod = render(load.load(REPO / "jobs/predict/mnist.yaml"))["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod and "tolerations" not in pod
    assert "nvidia.com/gpu" not in json.dumps(pod)


def test_job_name_is_a_pure_function_of_spec_name_and_input_key() -> None:
    key = data_key("inputs", "mnist/b1/_SUCCESS", 1700000000000001)
    assert job_name("mnist-predict", key) == job_name("mnist-predict", key)
    assert job_name("mnist-predict", key) != job_name("mnist-predict", data_key("inputs", "mnist/b1/_SUCCESS", 2))
    assert job_name("mnist-predict", key) != job_name("other", key)
    long = job_name("p" * 63, key, indexes=1000)
    # the number of indexes never changes the name, and every pod hostname <job>-<index> fits
    assert long == job_name("p" * 63, key, indexes=1) and len(long) <= 63 - len("-999")
    spec = load.load(REPO / "jobs/predict/mnist.yaml")
    assert render(spec)["metadata"]["name"] == render(spec)["metadata"]["name"]
    assert render(spec)["metadata"]["name"] == job_name(spec.name, input_key(spec.input.prefix, spec.input.glob))


def test_input_shorthand_and_globs() -> None:
    assert split_input("gs://b/in/batch/*.npy") == ("gs://b/in/batch", "*.npy")
    assert split_input("gs://b/in/**/x?.np[yz]") == ("gs://b/in", "**/x?.np[yz]")
    assert split_input("gs://b/in/") == ("gs://b/in", "**")
    rx = glob_regex("**/*.npy")
    assert rx.match("a.npy") and rx.match("d/e/a.npy") and not rx.match("a.npz")
    assert not glob_regex("*.npy").match("d/a.npy")
    assert glob_regex("x[!0-4].np[yz]").match("x7.npz") and not glob_regex("x[!0-4].npy").match("x3.npy")


def test_predictor_glob_dialect_matches_the_spec() -> None:
    sys.path.insert(0, str(REPO / "images/trainer/src"))
    from trainer.predict import glob_regex as predictor_glob

    names = ["a.npy", "d/a.npy", "d/e/b.npz", "x3.npy", "x7.npz", "c.txt"]
    for pattern in ("*.npy", "**/*.npy", "**", "d/*", "x[!0-4].np[yz]", "?.np?"):
        assert [n for n in names if glob_regex(pattern).match(n)] == [
            n for n in names if predictor_glob(pattern).match(n)
        ], pattern


HOSTILE = {
    "bad input uri": ({"input": "s3://bucket/in/*.npy"}, "input.prefix", "is not a gs:// URI"),
    "glob in bucket": ({"input": "gs://b*/x"}, "input.prefix", "is not a gs:// URI"),
    "bad output uri": ({"output": "gs://UPPER/out"}, "output", "is not a gs:// URI"),
    "output with glob": ({"output": "gs://bucket/out/*"}, "output", "glob character"),
    "bad model uri": ({"model": "http://models/mnist"}, "model.uri", "is not a gs:// URI"),
    "model bucket only": ({"model": "gs://models"}, "model.uri", "names a bucket only"),
    "bad model version": (
        {"model": {"uri": "gs://models/m", "version": "../v1"}},
        "model.version",
        "is not a model version",
    ),
    "missing model": ({"model": None}, "model", ""),
    "wrong device": ({"device": "tpu"}, "device", "'auto', 'cpu' or 'cuda'"),
    "cuda without gpu": ({"device": "cuda"}, "device", "resources.gpu is 0"),
    "parallelism 0": ({"parallelism": 0}, "parallelism", "greater than or equal to 1"),
    "parallelism negative": ({"parallelism": -3}, "parallelism", "greater than or equal to 1"),
    "more pods than indexes": ({"parallelism": 4, "completions": 2}, "parallelism", "more pods than indexes"),
    "batch size 0": ({"batchSize": 0}, "batchSize", "greater than or equal to 1"),
    "unknown field": ({"paralelism": 3}, "paralelism", "unknown field; expected one of"),
    "gpu without accelerator": ({"device": "auto", "resources": {"gpu": 1}}, "resources.gpu", "accelerator"),
    "output inside input": ({"output": "gs://my-project-inputs/mnist/batch-1/out"}, "output", "overlaps"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=str)
def test_hostile_specs_fail_offline_with_one_line(case: str, tmp_path: Path) -> None:
    changes, field, message = HOSTILE[case]
    doc = spec_doc(**changes)
    if changes.get("model", 1) is None:
        del doc["model"]
    path = tmp_path / "hostile.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError) as err:
        load.load(path)
    assert len(err.value.problems) == 1, str(err.value)
    assert err.value.problems[0].path == field, str(err.value)
    # The CLI: exit 2, one line naming file and field, no traceback, nothing sent (the kubeconfig does not
    # exist: getting as far as the cluster would be a different error, exit 1).
    proc = jobgen("predict", str(path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: {path}: {field}: ") and message in lines[0], lines[0]


def test_missing_model_message(tmp_path: Path) -> None:
    doc = spec_doc()
    del doc["model"]
    path = tmp_path / "nomodel.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = jobgen("predict", str(path))
    assert proc.stderr.strip() == f"error: {path}: model: required field is missing"


def test_not_a_prediction_spec(tmp_path: Path) -> None:
    proc = jobgen("predict", "jobs/cpu-ddp.yaml")
    assert (
        proc.returncode == 2
        and proc.stderr.strip()
        == "error: jobs/cpu-ddp.yaml: kind: expected BatchPrediction (a prediction spec), got 'PyTorchJob'"
    )


def test_dry_run_prints_the_validated_job() -> None:
    proc = jobgen(
        "predict",
        "jobs/predict/mnist.yaml",
        "--dry-run=client",
        "-o",
        "json",
        "--set",
        "parallelism=2",
        "--set",
        "completions=5",
    )
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)
    assert job["spec"]["parallelism"] == 2 and job["spec"]["completions"] == 5
    other = json.loads(
        jobgen("predict", "jobs/predict/mnist.yaml", "--dry-run=client", "-o", "json", "--run", "again").stdout
    )
    assert other["metadata"]["name"] != job["metadata"]["name"]


def test_validator_catches_a_hand_edited_job() -> None:
    manifest = render(load.load(REPO / "jobs/predict/mnist.yaml"))
    bad = copy.deepcopy(manifest)
    bad["spec"]["completionMode"] = "NonIndexed"
    bad["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    bad["spec"]["parallelism"] = 0
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    paths = {p.path for p in manifest_problems(bad)}
    assert {"spec.completionMode", "spec.template.spec.restartPolicy", "spec.parallelism"} <= paths
    assert any("bogus" in p.message for p in manifest_problems(bad))


def test_watcher_and_schedule_manifests() -> None:
    from jobgen.predict.trigger import manifest_for_data, manifest_for_run

    spec = load.load(REPO / "jobs/predict/mnist.yaml")
    a = manifest_for_data(spec, "gs://inputs/mnist/b7", "inputs", "mnist/b7/_SUCCESS", 17, trigger="mnist-inputs")
    assert a == manifest_for_data(
        spec, "gs://inputs/mnist/b7/", "inputs", "mnist/b7/_SUCCESS", 17, trigger="mnist-inputs"
    )
    args = a["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--input=gs://inputs/mnist/b7" in args and "--glob=*.np[yz]" in args  # the spec's glob, the version's prefix
    assert a["metadata"]["annotations"]["prediction.jobgen.io/generation"] == "17"
    assert a["metadata"]["labels"]["prediction.jobgen.io/trigger"] == "mnist-inputs"
    b = manifest_for_data(spec, "gs://inputs/mnist/b7", "inputs", "mnist/b7/_SUCCESS", 18)
    assert b["metadata"]["name"] != a["metadata"]["name"]  # a new generation is a new data version
    with pytest.raises(UserError) as err:
        manifest_for_data(spec, "s3://in/b7", "in", "b7/_SUCCESS", 1)
    assert err.value.problems[0].path == "input.prefix"
    t1, t2 = manifest_for_run(spec, "2026-11-30T06:00Z"), manifest_for_run(spec, "2026-11-30T07:00Z")
    assert (
        t1["metadata"]["name"]
        != t2["metadata"]["name"]
        == manifest_for_run(spec, "2026-11-30T07:00Z")["metadata"]["name"]
    )
