"""Rendering: every example renders and validates, and each spec field lands where it should."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobgen.errors import UserError
from jobgen.loader import load_spec, parse_spec
from jobgen.render import render
from jobgen.validate import manifest_problems

from ..conftest import JOBS, load_example


def pod(manifest, role):
    field = "pytorchReplicaSpecs" if manifest["kind"] == "PyTorchJob" else "tfReplicaSpecs"
    return manifest["spec"][field][role]["template"]


@pytest.mark.parametrize("path", JOBS, ids=lambda p: p.name)
def test_every_example_renders_and_validates(path):
    manifest = render(load_spec(path))
    assert manifest_problems(manifest) == []
    assert manifest["apiVersion"] == "kubeflow.org/v1"


def test_gpu_placement():
    m = render(load_spec(Path("jobs/mnist-ddp.yaml")))
    spec = pod(m, "Worker")["spec"]
    assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert spec["nodeSelector"]["cloud.google.com/gke-spot"] == "true"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    res = spec["containers"][0]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == 1 and res["requests"]["nvidia.com/gpu"] == 1
    assert spec["priorityClassName"] == "training-default"
    assert spec["serviceAccountName"] == "jobgen-trainer"


def test_cpu_job_has_no_gpu_placement(cpu_spec):
    spec = pod(render(parse_spec(cpu_spec, "x")), "Master")["spec"]
    assert spec["nodeSelector"] == {} and spec["tolerations"] == []
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["requests"]


def test_roles_without_gpu_do_not_target_gpu_nodes():
    doc = load_example("mnist-ddp.yaml")
    doc["replicas"]["Master"]["resources"] = {"cpu": "2", "memory": "4Gi"}
    m = render(parse_spec(doc, "x"))
    assert "cloud.google.com/gke-accelerator" not in pod(m, "Master")["spec"]["nodeSelector"]
    assert pod(m, "Worker")["spec"]["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"


def test_queue_label_and_managed_by():
    m = render(load_spec(Path("jobs/elastic-ddp.yaml")))
    assert m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert m["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "jobgen"


def test_distribution_is_rendered_as_strings():
    m = render(load_spec(Path("jobs/elastic-ddp.yaml")))
    assert m["spec"]["nprocPerNode"] == "1"
    assert m["spec"]["elasticPolicy"] == {"minReplicas": 2, "maxReplicas": 8, "rdzvBackend": "c10d", "maxRestarts": 10}
    assert "nProcPerNode" not in m["spec"]["elasticPolicy"]


def test_run_policy_and_restart_policy():
    m = render(load_spec(Path("jobs/mnist-ddp.yaml")))
    assert m["spec"]["runPolicy"] == {"backoffLimit": 3, "ttlSecondsAfterFinished": 86400, "cleanPodPolicy": "Running"}
    assert m["spec"]["pytorchReplicaSpecs"]["Worker"]["restartPolicy"] == "ExitCode"


def test_suspend_and_deadline(cpu_spec):
    cpu_spec["runPolicy"] = {"suspend": True, "activeDeadlineSeconds": 600}
    m = render(parse_spec(cpu_spec, "x"))
    assert m["spec"]["runPolicy"] == {"suspend": True, "activeDeadlineSeconds": 600}


def test_container_contract_pytorch(cpu_spec):
    c = pod(render(parse_spec(cpu_spec, "x")), "Worker")["spec"]["containers"][0]
    assert c["name"] == "pytorch"
    assert c["ports"] == [{"name": "pytorchjob-port", "containerPort": 23456, "protocol": "TCP"}]
    assert c["args"] == ["--lr=0.05", "--epochs=2", "--backend=gloo"]
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in c["env"]


def test_container_contract_tf():
    m = render(load_spec(Path("jobs/tf-mwms.yaml")))
    c = pod(m, "Chief")["spec"]["containers"][0]
    assert c["name"] == "tensorflow"
    assert c["ports"][0]["name"] == "tfjob-port"
    assert m["spec"]["successPolicy"] == ""


def test_storage_env():
    c = pod(render(load_spec(Path("jobs/mnist-ddp.yaml"))), "Master")["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["DATA_URI"] == "gs://my-project-data/mnist"
    assert env["OUTPUT_URI"] == "gs://my-project-models/mnist"
    assert env["CHECKPOINT_URI"] == "gs://my-project-checkpoints/mnist-ddp"  # <root>/<job name>


def test_shm_and_gcsfuse():
    m = render(load_spec(Path("jobs/tf-mwms.yaml")))
    template = pod(m, "Worker")
    assert template["metadata"]["annotations"] == {"gke-gcsfuse/volumes": "true"}
    vols = {v["name"]: v for v in template["spec"]["volumes"]}
    assert vols["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory"}}
    assert vols["data"]["csi"] == {
        "driver": "gcsfuse.csi.storage.gke.io",
        "readOnly": True,
        "volumeAttributes": {"bucketName": "my-project-data", "mountOptions": "implicit-dirs"},
    }
    mounts = {m["name"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["dshm"]["mountPath"] == "/dev/shm"
    assert mounts["data"] == {"name": "data", "mountPath": "/data", "readOnly": True}


def test_shm_size_and_disable(cpu_spec):
    assert pod(render(parse_spec(cpu_spec, "x")), "Worker")["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "256Mi"
    cpu_spec["volumes"] = {"shm": False}
    assert pod(render(parse_spec(cpu_spec, "x")), "Worker")["spec"]["volumes"] == []


def test_params_override_defaults_with_types(cpu_spec):
    spec = parse_spec(cpu_spec, "x")
    c = pod(render(spec, {"lr": "0.5", "epochs": 7}), "Master")["spec"]["containers"][0]
    assert c["args"] == ["--lr=0.5", "--epochs=7", "--backend=gloo"]


@pytest.mark.parametrize(
    "params,expect",
    [
        ({"momentum": 0.9}, "unknown hyperparameter"),
        ({"epochs": "two"}, "expected int"),
        ({"epochs": 0}, "below the minimum"),
        ({"lr": 2}, "above the maximum"),
        ({"backend": "nccl"}, "not one of"),
        ({"lr": "nan"}, "expected float"),
    ],
)
def test_bad_params(cpu_spec, params, expect):
    with pytest.raises(UserError) as info:
        render(parse_spec(cpu_spec, "x"), params, source="spec.yaml")
    assert expect in str(info.value) and "hyperparameters." in str(info.value)


def test_user_template_dir(cpu_spec, tmp_path):
    (tmp_path / "pytorchjob.yaml.j2").write_text(
        (Path("jobgen/templates/pytorchjob.yaml.j2").read_text())
        .replace("  runPolicy: {{ job.run_policy }}", "  runPolicy: {{ job.run_policy }}\n  # custom")
        .replace("kind: PyTorchJob", "kind: PyTorchJob\n# from the user's directory")
    )
    (tmp_path / "_replica.yaml.j2").write_text(
        Path("jobgen/templates/_replica.yaml.j2")
        .read_text()
        .replace(
            "          tolerations: {{ role.tolerations }}",
            "          tolerations: {{ role.tolerations }}\n          hostIPC: {{ true }}",
        )
    )
    m = render(parse_spec(cpu_spec, "x"), template_dir=str(tmp_path))
    assert pod(m, "Worker")["spec"]["hostIPC"] is True


def test_template_errors_are_user_errors(cpu_spec, tmp_path):
    (tmp_path / "bad.j2").write_text("kind: {{ job.nothing_here }}\n")
    (tmp_path / "partial.j2").write_text("name: job-{{ job.name }}\n")
    (tmp_path / "syntax.j2").write_text("name: {{ job.name \n")
    for name, expect in [
        ("bad.j2", "undefined value"),
        ("partial.j2", "whole YAML value"),
        ("syntax.j2", "syntax.j2:1"),
        ("missing.j2", "not found"),
    ]:
        cpu_spec["template"] = name
        with pytest.raises(UserError) as info:
            render(parse_spec(cpu_spec, "x"), template_dir=str(tmp_path), source="spec.yaml")
        assert expect in str(info.value), name
        assert "template" in str(info.value)


def test_manifests_share_no_objects(cpu_spec):
    m = render(parse_spec(cpu_spec, "x"))
    a, b = pod(m, "Master")["spec"], pod(m, "Worker")["spec"]
    assert a["containers"][0]["env"] == b["containers"][0]["env"]
    assert a["containers"][0]["env"] is not b["containers"][0]["env"]


def test_dump_round_trips(cpu_spec):
    from jobgen.render import dump_yaml

    m = render(parse_spec(cpu_spec, "x"))
    assert yaml.safe_load(dump_yaml(m)) == m


def test_pod_annotations(cpu_spec):
    cpu_spec["podAnnotations"] = {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"}
    m = render(parse_spec(cpu_spec, "x"))
    assert pod(m, "Worker")["metadata"]["annotations"] == cpu_spec["podAnnotations"]
    assert m["metadata"]["annotations"] == {}
