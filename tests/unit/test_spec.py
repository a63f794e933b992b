"""The job spec model: every rule gives a UserError naming the field and what was expected."""

from __future__ import annotations

from typing import Any

import pytest

from jobgen.errors import UserError
from jobgen.loader import apply_sets, load_spec, parse_spec, split_path


def problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(UserError) as info:
        parse_spec(doc, "spec.yaml")
    assert info.value.source == "spec.yaml"
    return {p.path: p.message for p in info.value.problems}


def test_example_parses(cpu_spec):
    spec = parse_spec(cpu_spec, "x")
    assert spec.kind == "PyTorchJob"
    assert spec.replicas["Worker"].replicas == 1
    assert spec.hyperparameters["lr"].default == 0.05


def test_unknown_field_lists_expected(cpu_spec):
    cpu_spec["replicas"]["Worker"]["replica"] = 2
    found = problems(cpu_spec)
    assert "replicas.Worker.replica" in found
    assert "unknown field" in found["replicas.Worker.replica"]
    assert "replicas" in found["replicas.Worker.replica"].split("expected one of:")[1]


def test_unknown_top_level_field(cpu_spec):
    cpu_spec["imagePullPolicy"] = "Always"
    assert "unknown field" in problems(cpu_spec)["imagePullPolicy"]


def test_wrong_type(cpu_spec):
    cpu_spec["replicas"]["Worker"]["replicas"] = "two"
    msg = problems(cpu_spec)["replicas.Worker.replicas"]
    assert "integer" in msg and "'two'" in msg


@pytest.mark.parametrize("count", [-1, 0])
def test_replicas_must_be_positive(cpu_spec, count):
    cpu_spec["replicas"]["Worker"]["replicas"] = count
    assert "greater than or equal to 1" in problems(cpu_spec)["replicas.Worker.replicas"]


def test_master_must_be_one(cpu_spec):
    cpu_spec["replicas"]["Master"]["replicas"] = 2
    assert "exactly 1" in problems(cpu_spec)["replicas.Master.replicas"]


def test_unknown_role(cpu_spec):
    cpu_spec["replicas"]["Chief"] = {"replicas": 1}
    assert "Master, Worker" in problems(cpu_spec)["replicas.Chief"]


def test_gpu_without_accelerator(cpu_spec):
    cpu_spec["resources"]["gpu"] = 1
    msg = problems(cpu_spec)["resources.gpu"]
    assert "placement.accelerator" in msg and "nvidia-l4" in msg


def test_gpu_without_accelerator_per_role(cpu_spec):
    cpu_spec["replicas"]["Worker"]["resources"] = {"gpu": 2}
    assert "placement.accelerator" in problems(cpu_spec)["replicas.Worker.resources.gpu"]


@pytest.mark.parametrize(
    "uri", ["s3://bucket/x", "gs://", "gs://B/upper", "gs://bucket//double", "gs://a/x", "gs://bucket/new\nline"]
)
def test_malformed_gs_uri(cpu_spec, uri):
    cpu_spec["storage"] = {"data": uri}
    assert "gs://" in problems(cpu_spec)["storage.data"]


@pytest.mark.parametrize("name", ["Upper", "1abc", "with_underscore", "ends-", ""])
def test_invalid_name(cpu_spec, name):
    cpu_spec["name"] = name
    assert "DNS-1035" in problems(cpu_spec)["name"]


def test_name_too_long_for_children(cpu_spec):
    # Worker index 0 → "-worker-0" is 9 characters, so 54 fit and 55 do not.
    cpu_spec["name"] = "a" * 54
    parse_spec(cpu_spec, "x")
    cpu_spec["name"] = "a" * 55
    assert "at most 54" in problems(cpu_spec)["name"]


def test_name_limit_counts_elastic_max_replicas():
    doc = {
        "kind": "PyTorchJob",
        "name": "e" * 53,
        "image": "i",
        "replicas": {"Worker": {"replicas": 2}},
        "distribution": {"elastic": {"minReplicas": 1, "maxReplicas": 10}},
    }
    # max index 9 → "-worker-9" = 9 chars → 54 fit; with 10 workers index 9 still 1 digit.
    parse_spec(doc, "x")
    doc["distribution"]["elastic"]["maxReplicas"] = 11  # index 10 → 10 chars → 53 fit
    parse_spec(doc, "x")
    doc["name"] = "e" * 54
    assert "at most 53" in problems(doc)["name"]


def test_elastic_needs_worker(cpu_spec):
    cpu_spec["replicas"] = {"Master": {"replicas": 1}}
    cpu_spec["distribution"] = {"elastic": {"minReplicas": 1, "maxReplicas": 2}}
    assert "Worker role is required" in problems(cpu_spec)["replicas.Worker"]


def test_elastic_bounds(cpu_spec):
    cpu_spec["distribution"] = {"elastic": {"minReplicas": 3, "maxReplicas": 2}}
    assert "must not exceed" in problems(cpu_spec)["distribution.elastic"]


def test_worker_within_elastic_bounds(cpu_spec):
    cpu_spec["replicas"]["Worker"]["replicas"] = 5
    cpu_spec["distribution"] = {"elastic": {"minReplicas": 1, "maxReplicas": 2}}
    assert "1..2" in problems(cpu_spec)["replicas.Worker.replicas"]


@pytest.mark.parametrize(
    "value,ok",
    [("auto", True), ("gpu", True), ("cpu", True), (4, True), ("8", True), (0, False), ("many", False), (-1, False)],
)
def test_nproc_per_node(cpu_spec, value, ok):
    cpu_spec["distribution"] = {"nprocPerNode": value}
    if ok:
        assert parse_spec(cpu_spec, "x").distribution.nproc_per_node == str(value)
    else:
        assert "auto, cpu, gpu" in problems(cpu_spec)["distribution.nprocPerNode"]


def test_tfjob_rejects_distribution():
    doc = {
        "kind": "TFJob",
        "name": "t",
        "image": "i",
        "replicas": {"Worker": {"replicas": 2}},
        "distribution": {"nprocPerNode": "auto"},
    }
    assert "only PyTorchJob" in problems(doc)["distribution"]


def test_restart_policy_values(cpu_spec):
    cpu_spec["restartPolicy"] = "Sometimes"
    assert "ExitCode" in problems(cpu_spec)["restartPolicy"]


def test_quantities(cpu_spec):
    cpu_spec["resources"] = {"cpu": "lots", "memory": "2GB"}
    found = problems(cpu_spec)
    assert "Kubernetes quantity" in found["resources.cpu"]
    assert "Kubernetes quantity" in found["resources.memory"]


def test_hyperparameter_default_must_match_type(cpu_spec):
    cpu_spec["hyperparameters"]["epochs"]["default"] = "three"
    assert "expected int" in problems(cpu_spec)["hyperparameters.epochs"]


def test_hyperparameter_default_within_bounds(cpu_spec):
    cpu_spec["hyperparameters"]["lr"]["default"] = 5.0
    assert "above the maximum" in problems(cpu_spec)["hyperparameters.lr"]


def test_env_names_and_labels(cpu_spec):
    cpu_spec["env"] = {"BAD-NAME": "x"}
    cpu_spec["labels"] = {"team": "has spaces"}
    found = problems(cpu_spec)
    assert "env name" in found["env"]
    assert "label value" in found["labels"]


def test_missing_required(cpu_spec):
    del cpu_spec["image"]
    assert problems(cpu_spec)["image"] == "required field is missing"


# --set --------------------------------------------------------------------------------------


def test_split_path():
    assert split_path("a.b[0].c") == ["a", "b", 0, "c"]
    assert split_path(r"labels.app\.kubernetes\.io/name") == ["labels", "app.kubernetes.io/name"]


def test_set_changes_fields(cpu_spec):
    doc = apply_sets(
        cpu_spec,
        [
            ("replicas.Worker.replicas", 3),
            ("placement.spot", True),
            ("hyperparameters.lr.default", 0.1),
            ("args[0]", "--verbose"),
        ],
        "x",
    )
    spec = parse_spec(doc, "x")
    assert spec.replicas["Worker"].replicas == 3
    assert spec.placement.spot is True
    assert spec.hyperparameters["lr"].default == 0.1
    assert spec.args == ["--verbose"]
    assert cpu_spec["replicas"]["Worker"]["replicas"] == 1  # the input is not modified


@pytest.mark.parametrize(
    "path,expect",
    [
        ("replicas.Worker.replica", "no such field"),
        ("placement.gpus", "no such field"),
        ("hyperparameters.momentum.default", "not declared"),
        ("args[3]", "out of range"),
        ("a..b", "cannot parse"),
    ],
)
def test_set_on_missing_path(cpu_spec, path, expect):
    with pytest.raises(UserError) as info:
        apply_sets(cpu_spec, [(path, 1)], "spec.yaml")
    assert expect in str(info.value)
    assert str(info.value).startswith("spec.yaml: ")


def test_load_spec_unreadable(tmp_path):
    with pytest.raises(UserError) as info:
        load_spec(tmp_path / "missing.yaml")
    assert "missing.yaml" in str(info.value) and "cannot read file" in str(info.value)


def test_load_spec_bad_yaml(write_spec):
    path = write_spec("kind: PyTorchJob\nname: [unclosed\n")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert "invalid YAML" in str(info.value) and "line" in str(info.value)


def test_load_spec_duplicate_keys(write_spec):
    path = write_spec("kind: PyTorchJob\nname: a\nname: b\n")
    with pytest.raises(UserError) as info:
        load_spec(path)
    assert "duplicate key 'name'" in str(info.value)
