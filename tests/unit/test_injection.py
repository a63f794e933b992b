"""Values can never change a manifest's structure: YAML/template injection through --set,
hyperparameters and env, plus property tests for value serialisation."""

from __future__ import annotations

import copy

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobgen import names
from jobgen.errors import UserError
from jobgen.loader import apply_sets, parse_set_value, parse_spec
from jobgen.render import dump_yaml, render
from jobgen.validate import manifest_problems

from ..conftest import load_example

PAYLOADS = [
    "x\nkind: Secret",
    'x"\n  hostNetwork: true\n"',
    "value: {injected: true}",
    "{{ job.name }}",
    "{% for r in roles %}{{ r }}{% endfor %}",
    "&anchor foo",
    "*anchor",
    "x\n---\napiVersion: v1\nkind: Pod",
    "'; privileged: true",
    "- item\n- item2",
    "key: [1, 2]\n  hostPID: true",
    "\u2028hostIPC: true",
    "\x85privileged: true",
    "!!python/object/apply:os.system ['id']",
    "# comment",
    "",
    "null",
    "true",
    "123",
]

BASE = load_example("cpu-ddp.yaml")


def _shape(node):
    """The structure of a manifest: its keys and list lengths, without scalar values."""
    if isinstance(node, dict):
        return {k: _shape(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_shape(v) for v in node]
    return type(node).__name__


def container(manifest, role="Worker"):
    return manifest["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_hyperparameter_value_injection(payload):
    doc = copy.deepcopy(BASE)
    doc["hyperparameters"]["note"] = {"type": "str", "default": "safe"}
    baseline = render(parse_spec(doc, "x"))
    m = render(parse_spec(doc, "x"), {"note": payload})
    assert container(m)["args"][-1] == f"--note={payload}"
    assert _shape(m) == _shape(baseline)
    assert manifest_problems(m) == []


@pytest.mark.parametrize("payload", PAYLOADS)
def test_env_value_injection(payload):
    doc = copy.deepcopy(BASE)
    doc["env"]["PAYLOAD"] = payload
    m = render(parse_spec(doc, "x"))
    env = {e["name"]: e["value"] for e in container(m)["env"]}
    assert env["PAYLOAD"] == payload
    doc["env"]["PAYLOAD"] = "plain"
    assert _shape(m) == _shape(render(parse_spec(doc, "x")))


@pytest.mark.parametrize("payload", PAYLOADS)
def test_set_string_injection(payload):
    doc = apply_sets(BASE, [("workingDir", payload or "x"), ("env.INJECT", payload), ("args[0]", payload)], "x")
    m = render(parse_spec(doc, "x"))
    assert container(m)["workingDir"] == (payload or "x")
    assert container(m)["args"][0] == payload
    clean = apply_sets(BASE, [("workingDir", "x"), ("env.INJECT", "x"), ("args[0]", "x")], "x")
    assert _shape(m) == _shape(render(parse_spec(clean, "x")))
    assert yaml.safe_load(dump_yaml(m)) == m


@pytest.mark.parametrize("payload", PAYLOADS)
def test_image_payloads_are_rejected_or_stay_strings(payload):
    # an image is not free-form: the OCI reference grammar refuses anything that could carry YAML;
    # what it accepts ("null", "true", "123" are valid repository names) stays the string it was
    doc = apply_sets(BASE, [("image", payload)], "x")
    if names.image_problem(payload) is not None:
        with pytest.raises(UserError, match="image"):
            parse_spec(doc, "x")
    else:
        assert container(render(parse_spec(doc, "x")))["image"] == payload


@pytest.mark.parametrize("payload", PAYLOADS)
def test_set_typed_value_cannot_inject(payload):
    # helm-style typing only turns true/false/null/numbers into scalars, never into structures.
    assert isinstance(parse_set_value(payload), (str, int, float, bool, type(None)))


def test_label_and_annotation_values_cannot_inject():
    doc = copy.deepcopy(BASE)
    doc["annotations"] = {"note": "a\nkind: Secret\nmetadata: {name: x}"}
    m = render(parse_spec(doc, "x"))
    assert m["kind"] == "PyTorchJob"
    assert m["metadata"]["annotations"] == doc["annotations"]


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=text, env_value=text)
def test_any_string_survives_render_and_dump(value, env_value):
    doc = copy.deepcopy(BASE)
    doc["hyperparameters"]["s"] = {"type": "str", "default": value}
    doc["env"]["S"] = env_value
    m = render(parse_spec(doc, "x"))
    assert container(m)["args"][-1] == f"--s={value}"
    assert {"name": "S", "value": env_value} in container(m)["env"]
    doc["hyperparameters"]["s"]["default"] = doc["env"]["S"] = "x"
    assert _shape(m) == _shape(render(parse_spec(doc, "x")))
    assert yaml.safe_load(dump_yaml(m)) == m


@settings(max_examples=300, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**63), 2**63 - 1) | st.booleans())
def test_scalars_round_trip_through_yaml(value):
    doc = copy.deepcopy(BASE)
    doc["env"]["V"] = value
    m = render(parse_spec(doc, "x"))
    m["spec"]["runPolicy"]["extra"] = value  # a typed scalar, not only strings
    back = yaml.safe_load(dump_yaml(m))
    assert back == m
    assert type(back["spec"]["runPolicy"]["extra"]) is type(value)
