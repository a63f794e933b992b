"""Sweep planning: grids, random sampling, deterministic names, rejections before anything runs."""

from __future__ import annotations

import copy

import pytest

from jobgen import sweep
from jobgen.errors import UserError
from jobgen.loader import parse_spec
from jobgen.names import is_dns1035

from ..conftest import load_example

BASE = load_example("cpu-ddp.yaml")


def spec(**hps):
    doc = copy.deepcopy(BASE)
    doc["hyperparameters"].update(hps)
    return parse_spec(doc, "spec.yaml")


def test_grid_is_a_typed_cartesian_product():
    s = spec()
    grid = sweep.parse_grid(s, ["lr=0.01,0.1", "epochs=1,2,3"], "spec.yaml")
    assert grid == {"lr": [0.01, 0.1], "epochs": [1, 2, 3]}
    name, trials = sweep.plan(s, grid, None, 0, None)
    assert len(trials) == 6 and len({t.name for t in trials}) == 6
    assert {(t.params["lr"], t.params["epochs"]) for t in trials} == {(a, b) for a in (0.01, 0.1) for b in (1, 2, 3)}
    assert all(is_dns1035(t.name) and t.name.startswith(name) for t in trials)


def test_names_are_deterministic_and_fit():
    s = spec()
    grid = sweep.parse_grid(s, ["lr=0.01,0.1"], None)
    assert sweep.plan(s, grid, None, 0, None)[0] == sweep.plan(s, grid, None, 0, None)[0]
    other = sweep.parse_grid(s, ["lr=0.02,0.1"], None)
    assert sweep.plan(s, grid, None, 0, None)[0] != sweep.plan(s, other, None, 0, None)[0]
    long = copy.deepcopy(BASE)
    long["name"] = "n" * 50
    name, trials = sweep.plan(parse_spec(long, "x"), {"epochs": list(range(1, 101))}, None, 0, None)
    assert all(len(t.name) <= 63 - len("-worker-0") for t in trials)


@pytest.mark.parametrize(
    "item,expect",
    [
        ("momentum=0.9", "unknown hyperparameter"),
        ("lr=fast", "expected float"),
        ("lr=5", "above the maximum"),
        ("epochs=0", "below the minimum"),
        ("backend=nccl", "not one of"),
        ("lr", "expected NAME=V1,V2"),
    ],
)
def test_grid_rejections(item, expect):
    with pytest.raises(UserError) as info:
        sweep.parse_grid(spec(), [item], "spec.yaml")
    assert expect in str(info.value) and str(info.value).startswith("spec.yaml: --grid")


def test_random_samples_declared_ranges():
    s = spec(
        momentum={"type": "float", "default": 0.9, "min": 0.5, "max": 0.99},
        layers={"type": "int", "default": 2, "min": 1, "max": 4},
        wd={"type": "float", "default": 0.001, "min": 0.00001, "max": 0.1},
        aug={"type": "bool", "default": False},
    )
    trials = sweep.random_trials(s, 200, seed=7)
    assert trials == sweep.random_trials(s, 200, seed=7)
    assert all(0.5 <= t["momentum"] <= 0.99 and 1 <= t["layers"] <= 4 and t["backend"] == "gloo" for t in trials)
    assert {t["layers"] for t in trials} == {1, 2, 3, 4} and {t["aug"] for t in trials} == {False, True}
    # a range spanning 4 decades is sampled log-uniformly: about a quarter below 1e-4
    below = sum(t["wd"] < 1e-4 for t in trials) / len(trials)
    assert 0.1 < below < 0.45
    assert "epochs" not in trials[0]  # no range declared: keeps its default


def test_manifests_label_params_and_suspend_beyond_parallelism():
    s = spec()
    name, trials = sweep.plan(s, {"lr": [0.1, 0.2, 0.3]}, None, 0, "mysweep")
    ms = sweep.manifests(s, name, trials, 2, None, "spec.yaml")
    assert [m["spec"]["runPolicy"].get("suspend") for m in ms] == [False, False, True]
    assert all(m["metadata"]["labels"]["jobgen.io/sweep"] == "mysweep" for m in ms)
    assert [m["metadata"]["annotations"]["jobgen.io/params"] for m in ms] == [
        '{"lr": 0.1}',
        '{"lr": 0.2}',
        '{"lr": 0.3}',
    ]
    args = ms[2]["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]
    assert "--lr=0.3" in args


def test_bad_sweep_name():
    with pytest.raises(UserError) as info:
        sweep.plan(spec(), {"lr": [0.1]}, None, 0, "Bad_Name")
    assert "--name" in str(info.value)
