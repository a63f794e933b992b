"""Manifest validation: CRD schema, core pod template schema and the operator webhook's rules."""

from __future__ import annotations

import copy

import pytest

from jobgen.loader import parse_spec
from jobgen.render import render
from jobgen.validate import manifest_problems

from ..conftest import load_example

PT = render(parse_spec(load_example("cpu-ddp.yaml"), "x"))
TF = render(parse_spec(load_example("tf-mwms.yaml"), "x"))


def problems(manifest):
    return {p.path: p.message for p in manifest_problems(manifest)}


def edit(manifest, fn):
    m = copy.deepcopy(manifest)
    fn(m)
    return problems(m)


def worker(m):
    return m["spec"]["pytorchReplicaSpecs"]["Worker"]


def test_valid_examples():
    assert problems(PT) == {} and problems(TF) == {}


def test_unknown_field_in_crd_part():
    found = edit(PT, lambda m: m["spec"].update(nprocsPerNode="2"))
    assert "nprocsPerNode" in found["spec"] and "nprocPerNode" in found["spec"]


def test_unknown_field_in_pod_template():
    found = edit(PT, lambda m: worker(m)["template"]["spec"]["containers"][0].update(imagee="x"))
    assert "'imagee' was unexpected" in found["spec.pytorchReplicaSpecs.Worker.template.spec.containers[0]"]


def test_wrong_type_in_core_schema():
    found = edit(PT, lambda m: worker(m)["template"]["spec"].update(hostNetwork="yes"))
    assert "not of type 'boolean'" in found["spec.pytorchReplicaSpecs.Worker.template.spec.hostNetwork"]


def test_container_name_rule():
    found = edit(PT, lambda m: worker(m)["template"]["spec"]["containers"][0].update(name="trainer"))
    assert "container named 'pytorch'" in found["spec.pytorchReplicaSpecs.Worker.template.spec.containers"]


def test_port_name_rule():
    found = edit(PT, lambda m: worker(m)["template"]["spec"]["containers"][0]["ports"][0].update(name="p"))
    assert "pytorchjob-port" in found["spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].ports"]


def test_tf_container_rule():
    found = edit(
        TF, lambda m: m["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0].update(name="pytorch")
    )
    assert "'tensorflow'" in found["spec.tfReplicaSpecs.Chief.template.spec.containers"]


def test_master_exactly_one():
    found = edit(PT, lambda m: m["spec"]["pytorchReplicaSpecs"]["Master"].update(replicas=2))
    assert found["spec.pytorchReplicaSpecs.Master.replicas"] == "must be 1, got 2"


def test_negative_worker_replicas():
    assert "at least 1" in edit(PT, lambda m: worker(m).update(replicas=-3))["spec.pytorchReplicaSpecs.Worker.replicas"]


def test_elastic_needs_worker():
    def fn(m):
        m["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 2}
        del m["spec"]["pytorchReplicaSpecs"]["Worker"]

    assert "elastic" in edit(PT, fn)["spec.pytorchReplicaSpecs.Worker"]


def test_nproc_both_set():
    def fn(m):
        m["spec"]["elasticPolicy"] = {"minReplicas": 1, "maxReplicas": 2, "nProcPerNode": 2}
        m["spec"]["nprocPerNode"] = "2"

    assert "must not be used with spec.nprocPerNode" in edit(PT, fn)["spec.elasticPolicy.nProcPerNode"]


def test_tf_at_most_one_chief_or_master():
    def fn(m):
        m["spec"]["tfReplicaSpecs"]["Master"] = copy.deepcopy(m["spec"]["tfReplicaSpecs"]["Chief"])

    assert "more than 1 Chief or Master" in edit(TF, fn)["spec.tfReplicaSpecs"]


def test_unsupported_replica_type():
    def fn(m):
        m["spec"]["pytorchReplicaSpecs"]["Launcher"] = copy.deepcopy(worker(m))

    assert "Master, Worker" in edit(PT, fn)["spec.pytorchReplicaSpecs.Launcher"]


@pytest.mark.parametrize("name,expect", [("Bad_Name", "DNS-1035"), ("a" * 55, "at most 54")])
def test_job_name(name, expect):
    assert expect in edit(PT, lambda m: m["metadata"].update(name=name))["metadata.name"]


def test_name_limit_uses_largest_role_index():
    found = edit(PT, lambda m: (worker(m).update(replicas=11), m["metadata"].update(name="a" * 54)))
    assert "at most 53" in found["metadata.name"]


def test_managed_by():
    found = edit(PT, lambda m: m["spec"]["runPolicy"].update(managedBy="someone-else"))
    assert "kubeflow.org/training-operator" in found["spec.runPolicy.managedBy"]


def test_wrong_kind_and_api_version():
    assert "PyTorchJob, TFJob" in edit(PT, lambda m: m.update(kind="MPIJob"))["kind"]
    assert "kubeflow.org/v1" in edit(PT, lambda m: m.update(apiVersion="kubeflow.org/v2"))["apiVersion"]


def test_crd_enum():
    found = edit(PT, lambda m: m["spec"]["runPolicy"].update(cleanPodPolicy="Sometimes"))
    assert "spec.runPolicy.cleanPodPolicy" in found


def test_restart_policy_values():
    found = edit(PT, lambda m: worker(m).update(restartPolicy="Sometimes"))
    assert "ExitCode" in found["spec.pytorchReplicaSpecs.Worker.restartPolicy"]
