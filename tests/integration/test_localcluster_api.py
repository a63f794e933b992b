"""The local apiserver is a real one: server-side schema validation, service-account token
authentication and RBAC, and our manifests/ apply to it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobgen.localcluster.bins import REPO_ROOT
from jobgen.localcluster.testing import LocalClusterHandle, pytorchjob, wait_for

pytestmark = pytest.mark.integration
MANIFESTS = REPO_ROOT / "manifests"


def test_server_side_dry_run_rejects_invalid_manifest(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("dry")
    job = pytorchjob("broken", ns, workers=1)
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "two"  # schema: integer
    proc = lc.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=yaml.safe_dump(job), check=False)
    assert proc.returncode != 0
    assert "spec.pytorchReplicaSpecs.Worker.replicas" in proc.stderr, proc.stderr
    assert "expected numeric" in proc.stderr, proc.stderr
    assert lc.kubectl("get", "pytorchjob", "broken", "-n", ns, check=False).returncode != 0

    # the CRD's OpenAPI schema (required fields of the pod template) is enforced on create too
    job = pytorchjob("nameless", ns, workers=1)
    del job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]
    proc = lc.kubectl("create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(job), check=False)
    assert proc.returncode != 0
    assert "spec.pytorchReplicaSpecs.Worker.template.spec.containers[0].name: Required value" in proc.stderr, (
        proc.stderr
    )

    # a valid job passes the same dry run and is still not created
    ok = lc.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        "-",
        input=yaml.safe_dump(pytorchjob("fine", ns, workers=1)),
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert lc.kubectl("get", "pytorchjob", "fine", "-n", ns, check=False).returncode != 0


def test_unknown_field_is_rejected_by_strict_field_validation(local_cluster: LocalClusterHandle) -> None:
    lc = local_cluster
    ns = lc.create_namespace("strict")
    job = pytorchjob("typo", ns, workers=1)
    job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicaz"] = 1
    proc = lc.kubectl(
        "create", "--dry-run=server", "--validate=strict", "-f", "-", input=yaml.safe_dump(job), check=False
    )
    assert proc.returncode != 0
    assert 'unknown field "spec.pytorchReplicaSpecs.Worker.replicaz"' in proc.stderr, proc.stderr


def test_service_account_without_permission_is_forbidden(local_cluster: LocalClusterHandle, tmp_path: Path) -> None:
    lc = local_cluster
    ns = lc.create_namespace("rbac")
    lc.kubectl("create", "serviceaccount", "nobody", "-n", ns)
    kc = lc.token_kubeconfig(ns, "nobody", tmp_path / "nobody.kubeconfig")

    who = lc.kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}", kubeconfig=kc)
    assert who.stdout == f"system:serviceaccount:{ns}:nobody"  # token authentication works
    proc = lc.apply(pytorchjob("denied", ns, workers=1), kubeconfig=kc, check=False)
    assert proc.returncode != 0
    assert "forbidden" in proc.stderr.lower(), proc.stderr
    assert f'User "system:serviceaccount:{ns}:nobody" cannot' in proc.stderr, proc.stderr
    assert 'resource "pytorchjobs"' in proc.stderr, proc.stderr


def test_bad_token_is_unauthorized(local_cluster: LocalClusterHandle, tmp_path: Path) -> None:
    lc = local_cluster
    from jobgen.localcluster.pki import write_kubeconfig

    kc = write_kubeconfig(
        tmp_path / "bad.kubeconfig",
        server=lc.server,
        ca_pem=lc.cluster.pki.ca_cert.read_bytes(),
        context="bad",
        user={"token": "not-a-token"},
    )
    proc = lc.kubectl("get", "namespaces", kubeconfig=str(kc), check=False)
    assert proc.returncode != 0
    assert "Unauthorized" in proc.stderr or "must be logged in" in proc.stderr, proc.stderr


def test_manifests_training_namespace_rbac_and_priorityclasses(
    local_cluster: LocalClusterHandle, tmp_path: Path
) -> None:
    """`up` applied manifests/training; the submitter SA may submit there and nowhere else,
    the trainer KSA may not create workloads."""
    lc = local_cluster
    for kind, name in (
        ("priorityclass", "training-high"),
        ("priorityclass", "training-default"),
        ("priorityclass", "training-low"),
        ("namespace", "training"),
        ("clusterrole", "jobgen-job-submitter"),
    ):
        assert lc.kubectl("get", kind, name, check=False).returncode == 0, f"{kind}/{name} missing"
    # re-applying the kustomization is idempotent
    lc.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(MANIFESTS / "training"))

    sub = lc.token_kubeconfig("training", "jobgen-submitter", tmp_path / "submitter.kubeconfig")
    job = pytorchjob("by-submitter", "training", workers=1, pool="cpu")
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["priorityClassName"] = "training-high"
    job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["serviceAccountName"] = "jobgen-trainer"
    lc.apply(job, kubeconfig=sub)
    other = lc.create_namespace("elsewhere")
    denied = lc.apply(pytorchjob("nope", other, workers=1), kubeconfig=sub, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr

    trainer = lc.token_kubeconfig("training", "jobgen-trainer", tmp_path / "trainer.kubeconfig")
    for verb_resource in (("create", "pods"), ("create", "pytorchjobs.kubeflow.org"), ("delete", "pods")):
        can = lc.kubectl("auth", "can-i", *verb_resource, "-n", "training", kubeconfig=trainer, check=False)
        assert can.stdout.strip() == "no", (verb_resource, can.stdout)
    can = lc.kubectl("auth", "can-i", "get", "configmaps", "-n", "training", kubeconfig=trainer, check=False)
    assert can.stdout.strip() == "yes"

    # the master pod got the priority of its class from the real Priority admission plugin
    pod = wait_for(
        lambda: lc.kubectl(
            "get", "pod", "by-submitter-master-0", "-n", "training", "-o", "jsonpath={.spec.priority}", check=False
        ).stdout,
        60,
        "master pod",
    )
    assert pod == "100000"
    lc.kubectl("delete", "pytorchjob", "by-submitter", "-n", "training")


def test_training_namespace_enforces_restricted_and_the_operator_init_container_passes(
    local_cluster: LocalClusterHandle,
) -> None:
    """manifests/training enforces PodSecurity `restricted` (as on GKE), and the PyTorchJob worker's
    init container the operator injects (manifests/training-operator/pytorch-init-container.gotmpl)
    is admitted there. With upstream's default init container the worker pod is rejected."""
    lc = local_cluster
    labels = lc.get("namespace", "training")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted", labels
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "not-restricted", "namespace": "training"},
        "spec": {"containers": [{"name": "c", "image": "python:3.11-slim"}]},
    }
    out = lc.apply(bare, check=False)
    assert out.returncode != 0 and 'violates PodSecurity "restricted' in out.stderr, out.stderr

    lc.apply(pytorchjob("init-restricted", "training", workers=1, pool="cpu"))
    try:
        worker = wait_for(
            lambda: (
                r := lc.kubectl("get", "pod", "init-restricted-worker-0", "-n", "training", "-o", "json", check=False)
            ).returncode
            == 0
            and r,
            60,
            "worker pod admitted",
            interval=0.5,
        )
        init = yaml.safe_load(worker.stdout)["spec"]["initContainers"]
        assert [c["name"] for c in init] == ["init-pytorch"], init
        assert init[0]["securityContext"]["runAsNonRoot"] is True
        assert "getent hosts init-restricted-master-0" in init[0]["command"][-1]
    finally:
        lc.kubectl("delete", "pytorchjob", "init-restricted", "-n", "training", "--wait=false", check=False)


def test_operator_runs_with_its_own_rbac(local_cluster: LocalClusterHandle) -> None:
    """The operator authenticates as its ServiceAccount, so the vendored ClusterRole is what lets it work."""
    lc = local_cluster
    can = lc.kubectl(
        "auth",
        "can-i",
        "create",
        "pods",
        "-n",
        "default",
        "--as=system:serviceaccount:kubeflow:training-operator",
        check=False,
    )
    assert can.stdout.strip() == "yes"
    can = lc.kubectl(
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        "default",
        "--as=system:serviceaccount:kubeflow:training-operator",
        check=False,
    )
    assert can.stdout.strip() == "no"


@pytest.mark.parametrize("path", ["", "training-operator", "training", "kueue"])
def test_kustomizations_build(local_cluster: LocalClusterHandle, path: str) -> None:
    lc = local_cluster
    out = lc.kubectl("kustomize", str(MANIFESTS / path) if path else str(MANIFESTS)).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    if path in ("", "training-operator"):
        deploy = next(d for d in docs if d["kind"] == "Deployment")
        images = [c["image"] for c in deploy["spec"]["template"]["spec"]["containers"]]
        assert images == ["ghcr.io/kubeflow/training-v1/training-operator:v1-93c5489"]
        assert "CustomResourceDefinition" in kinds
    if path == "kueue":
        assert kinds == {"ResourceFlavor", "ClusterQueue", "LocalQueue"}
    if path in ("", "training"):
        assert {"Namespace", "PriorityClass", "ClusterRole", "RoleBinding", "ServiceAccount"} <= kinds
