"""Names shared by terraform/ and manifests/: the namespace and KSAs that
terraform binds with Workload Identity are the ones the cluster gets, and the
Kueue flavors select node pools terraform creates."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import HACK, REPO, TF_DIR
from .hcl import load, load_module

ROOT = load_module(TF_DIR)


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is needed for `kubectl kustomize` (CI=true: not skipping)")
        pytest.skip("kubectl not on PATH: cannot render the kustomize overlay")
    return path


def overlay(tmp_path: Path, ns: str, ksa: str, gsa: str, deployer: str = "") -> list[dict]:
    """write_k8s_overlay (hack/terraform/lib.sh) rendered by kubectl kustomize."""
    out = tmp_path / "k8s"
    script = f'source "{HACK}/lib.sh"; write_k8s_overlay "{out}" "{ns}" "{ksa}" "{gsa}" false "{deployer}"'
    subprocess.run(["bash", "-c", script], check=True, env={**os.environ, "TF_DIR": str(tmp_path)})
    res = subprocess.run([kubectl(), "kustomize", str(out / "training")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def test_manifests_use_terraforms_default_names():
    """With terraform's defaults the manifests need no rewriting."""
    ns = ROOT.variables["k8s_namespace"]["default"]
    trainer = ROOT.variables["trainer_ksa"]["default"]
    assert docs(REPO / "manifests" / "training" / "namespace.yaml")[0]["metadata"]["name"] == ns
    sas = {
        d["metadata"]["name"]: d
        for d in docs(REPO / "manifests" / "training" / "rbac-trainer.yaml")
        if d["kind"] == "ServiceAccount"
    }
    assert trainer in sas and sas[trainer]["metadata"]["namespace"] == ns
    # The chart's defaults agree too (terraform passes them anyway).
    values = yaml.safe_load((REPO / "charts" / "retrain-watcher" / "values.yaml").read_text())
    assert values["trainer"]["namespace"] == ns and values["trainer"]["serviceAccount"] == trainer
    assert values["serviceAccount"]["name"] == ROOT.variables["watcher_ksa"]["default"]


def test_overlay_renames_namespace_and_trainer_ksa(tmp_path: Path):
    objs = overlay(tmp_path, "ml-team", "team-trainer", "t@p.iam.gserviceaccount.com")
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in objs}
    assert ("Namespace", "ml-team") in kinds and ("Namespace", "training") not in kinds
    sa = kinds[("ServiceAccount", "team-trainer")]
    assert sa["metadata"]["namespace"] == "ml-team"
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == "t@p.iam.gserviceaccount.com"
    assert ("ServiceAccount", "jobgen-trainer") not in kinds
    binding = kinds[("RoleBinding", "jobgen-trainer")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "team-trainer", "namespace": "ml-team"}]
    for d in objs:
        if d["kind"] not in ("Namespace", "ClusterRole", "PriorityClass"):
            assert d["metadata"]["namespace"] == "ml-team", d["metadata"]
    assert "training" not in yaml.safe_dump_all([d for d in objs if d["kind"] != "PriorityClass"]).replace(
        "training-", ""
    )


def test_overlay_with_defaults_equals_the_manifests(tmp_path: Path):
    """The overlay changes nothing but the annotation when terraform keeps its defaults."""
    objs = overlay(tmp_path, "training", "jobgen-trainer", "g@p.iam.gserviceaccount.com")
    plain = subprocess.run(
        [kubectl(), "kustomize", str(REPO / "manifests" / "training")], capture_output=True, text=True, check=True
    )
    base = [d for d in yaml.safe_load_all(plain.stdout) if d]
    for d in objs:
        d["metadata"].pop("annotations", None) if d["kind"] == "ServiceAccount" and d["metadata"][
            "name"
        ] == "jobgen-trainer" else None
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731 - a sort key
    assert sorted(objs, key=key) == sorted(base, key=key)


def test_overlay_includes_the_operator(tmp_path: Path):
    overlay(tmp_path, "training", "jobgen-trainer", "g@p.iam.gserviceaccount.com")
    res = subprocess.run([kubectl(), "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    objs = [d for d in yaml.safe_load_all(res.stdout) if d]
    webhooks = [d for d in objs if d["kind"] == "ValidatingWebhookConfiguration"]
    assert webhooks, "the training-operator (and its webhook) is installed by the same overlay"
    # Its webhook Service targets 9443: the port terraform opens from the control plane.
    services = [
        d
        for d in objs
        if d["kind"] == "Service"
        and any(p.get("name", "").startswith("webhook") or p.get("port") == 443 for p in d["spec"].get("ports", []))
    ]
    target_ports = {p.get("targetPort") for s in services for p in s["spec"]["ports"]}
    assert 9443 in target_ports, target_ports
    assert 9443 in ROOT.variables["webhook_ports"]["default"]


def test_kueue_flavors_select_pools_terraform_creates():
    pools = {"system"}
    for f in [*sorted((TF_DIR / "examples").glob("*.tfvars")), TF_DIR / "terraform.tfvars.example"]:
        pools |= {p["name"] for p in load(f).get("gpu_pools", [])}
    assert 'name     = "system"' in ROOT.files["nodepools.tf"], "the system pool is named system"
    selected = {
        (f["metadata"]["name"], v)
        for f in docs(REPO / "manifests" / "kueue" / "resourceflavors.yaml")
        for k, v in (f["spec"].get("nodeLabels") or {}).items()
        if k == "cloud.google.com/gke-nodepool"
    }
    assert selected, "the cpu flavor selects a node pool by name"
    for flavor, pool_name in selected:
        assert pool_name in pools, (
            f"ResourceFlavor {flavor} selects node pool {pool_name!r}, which terraform does not create: {sorted(pools)}"
        )


def test_kueue_check_can_fail():
    """The check above sees a flavor naming a pool that does not exist."""
    bad = {"spec": {"nodeLabels": {"cloud.google.com/gke-nodepool": "cpu"}}}
    assert bad["spec"]["nodeLabels"]["cloud.google.com/gke-nodepool"] not in {"system", "l4"}


def test_overlay_lets_the_ci_deployer_manage_the_namespace_only(tmp_path: Path):
    objs = overlay(
        tmp_path, "ml-team", "t", "t@p.iam.gserviceaccount.com", "jobgen-ci-deploy@p.iam.gserviceaccount.com"
    )
    rb = next(d for d in objs if d["kind"] == "RoleBinding" and d["metadata"]["name"] == "jobgen-ci-deploy")
    assert rb["metadata"]["namespace"] == "ml-team"
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}
    assert rb["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "jobgen-ci-deploy@p.iam.gserviceaccount.com"}
    ]
    assert not any(d["kind"] == "ClusterRoleBinding" for d in objs), "nothing cluster-wide for CI"
    without = overlay(tmp_path, "ml-team", "t", "t@p.iam.gserviceaccount.com")
    assert not any(d["metadata"]["name"] == "jobgen-ci-deploy" for d in without)


def test_gke_operator_reads_the_restricted_pytorch_init_container(tmp_path: Path):
    """What terraform installs on GKE: the operator's --pytorch-init-container-template-file names a
    file of a mounted ConfigMap holding manifests/training-operator/pytorch-init-container.gotmpl
    (the same file the local cluster's operator reads), and the namespace it runs in enforces
    restricted. A mount path, key or ConfigMap name that drifts apart makes the operator fall back,
    silently, to upstream's init container, which `restricted` rejects."""
    overlay(tmp_path, "training", "jobgen-trainer", "g@p.iam.gserviceaccount.com")
    res = subprocess.run([kubectl(), "kustomize", str(tmp_path / "k8s")], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    objs = [d for d in yaml.safe_load_all(res.stdout) if d]
    (deploy,) = [d for d in objs if d["kind"] == "Deployment" and d["metadata"]["name"] == "training-operator"]
    pod = deploy["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "training-operator"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in container.get("args", []))
    path = Path(flags["pytorch-init-container-template-file"])
    assert flags["pytorch-init-container-image"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    (cm,) = [
        d
        for d in objs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"] == volume["configMap"]["name"]
        and d["metadata"]["namespace"] == deploy["metadata"]["namespace"]
    ]
    template = (REPO / "manifests" / "training-operator" / "pytorch-init-container.gotmpl").read_text()
    assert cm["data"][path.name] == template
    (ns,) = [d for d in objs if d["kind"] == "Namespace" and d["metadata"]["name"] == "training"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    # the template, filled in the way the operator fills it, is one restricted container
    filled = (
        template.replace("{{.InitContainerImage}}", flags["pytorch-init-container-image"])
        .replace("{{.MaxTries}}", "100")
        .replace("{{.MasterAddr}}", "job-master-0")
    )
    (init,) = yaml.safe_load(filled)
    sc = init["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"
