"""Free-form strings that reach a manifest are checked offline against Kubernetes' and OCI's rules,
and every numeric hyperparameter is bounded."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobgen import names
from jobgen.errors import UserError
from jobgen.loader import parse_spec
from jobgen.render import resolve_params
from jobgen.spec import DEFAULT_NUMBER_BOUND


def problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(UserError) as info:
        parse_spec(doc, "spec.yaml")
    return {p.path: p.message for p in info.value.problems}


@pytest.mark.parametrize(
    "image",
    [
        "trainer",
        "us-docker.pkg.dev/p/training/trainer:0.1.0",
        "localhost:5000/a/b:dev",
        "ghcr.io/kubeflow/training-v1/training-operator:v1-93c5489",
        f"r.io/a@sha256:{'a' * 64}",
        f"r.io/a:v1@sha256:{'0' * 64}",
        "[::1]:5000/x",
        "a__b/c-d.e",
    ],
)
def test_valid_images(image):
    assert names.image_problem(image) is None


@pytest.mark.parametrize(
    "image",
    [
        "",
        "a b",
        "x:",
        "Trainer",
        "r.io/UPPER",
        "r.io/a@sha256:abc",
        "r.io/a:" + "t" * 129,
        ":tag",
        "a//b",
        "r.io/a:tag\nextra",
        "-a",
        "r.io/" + "a" * 256,
    ],
)
def test_invalid_images(image, cpu_spec):
    assert names.image_problem(image) is not None
    cpu_spec["image"] = image
    assert any(w in problems(cpu_spec)["image"] for w in ("image reference", "longer than", "at least 1"))


def test_replica_image_checked(cpu_spec):
    cpu_spec["replicas"]["Worker"]["image"] = "bad image"
    assert "image reference" in problems(cpu_spec)["replicas.Worker.image"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("labels", {"team": "a b"}, "label value"),
        ("labels", {"-bad": "x"}, "qualified name"),
        ("labels", {"UPPER.io/x": "y"}, "invalid prefix"),
        ("annotations", {"ok": "x" * (300 * 1024)}, "at most 262144"),
        ("podAnnotations", {"a/b/c": "x"}, "invalid prefix"),
    ],
)
def test_label_and_annotation_rules(cpu_spec, field, value, message):
    cpu_spec[field] = value
    assert message in problems(cpu_spec)[field]


@pytest.mark.parametrize(
    ("placement", "path", "message"),
    [
        ({"nodeSelector": {"pool": "gpu pool"}}, "placement.nodeSelector", "label value"),
        ({"nodeSelector": {"bad key!": "x"}}, "placement.nodeSelector", "qualified name"),
        ({"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}, "placement.tolerations[0]", "Exists"),
        ({"tolerations": [{"key": "k", "value": "has space"}]}, "placement.tolerations[0]", "label value"),
        ({"tolerations": [{"value": "v"}]}, "placement.tolerations[0]", "key is empty"),
        (
            {"tolerations": [{"key": "k", "value": "v", "tolerationSeconds": 5}]},
            "placement.tolerations[0]",
            "NoExecute",
        ),
    ],
)
def test_placement_rules(cpu_spec, placement, path, message):
    cpu_spec["placement"] = placement
    found = problems(cpu_spec)
    assert message in found[path], found


def test_rdzv_host(cpu_spec):
    doc = copy.deepcopy(cpu_spec)
    doc["distribution"] = {"elastic": {"minReplicas": 1, "maxReplicas": 2, "rdzvHost": "not a host"}}
    assert "not a host" in problems(doc)["distribution.elastic.rdzvHost"]
    doc["distribution"]["elastic"]["rdzvHost"] = "10.0.0.1"
    parse_spec(doc, "x")


def test_numbers_without_declared_bounds_are_bounded(cpu_spec):
    cpu_spec["hyperparameters"] = {
        "steps": {"type": "int", "default": 10},
        "scale": {"type": "float", "default": 1.0},
        "tag": {"type": "str", "default": "x"},
    }
    spec = parse_spec(cpu_spec, "x")
    assert resolve_params(spec, {"steps": str(DEFAULT_NUMBER_BOUND)})["steps"] == DEFAULT_NUMBER_BOUND
    for name, value in (
        ("steps", str(DEFAULT_NUMBER_BOUND + 1)),
        ("steps", "-" + "9" * 20),
        ("scale", "1e300"),
        ("tag", "x" * 5000),
    ):
        with pytest.raises(UserError) as info:
            resolve_params(spec, {name: value}, "spec.yaml")
        assert f"hyperparameters.{name}" in str(info.value)
    cpu_spec["hyperparameters"]["steps"]["max"] = 10**12  # a declared bound wins
    assert resolve_params(parse_spec(cpu_spec, "x"), {"steps": str(10**11)})["steps"] == 10**11


@settings(max_examples=300)
@given(st.text(max_size=80))
def test_label_value_rule_matches_kubernetes_definition(text):
    # k8s IsValidLabelValue: empty, or <= 63 chars, alphanumeric at both ends, [-_.A-Za-z0-9] inside.
    ok = text == "" or (
        len(text) <= 63
        and text[0].isascii()
        and text[0].isalnum()
        and text[-1].isascii()
        and text[-1].isalnum()
        and all(c.isascii() and (c.isalnum() or c in "-_.") for c in text)
    )
    assert (names.label_value_problem(text) is None) == ok
