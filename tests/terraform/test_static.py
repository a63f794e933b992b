"""Static checks of terraform/ with python-hcl2: the security properties hold
in the code itself, whatever the variables (no provider, no plan needed)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import TF_DIR
from .hcl import dynamic, load, load_module, one

ROOT = load_module(TF_DIR)
GPU = load_module(TF_DIR / "modules" / "gpu-node-pool")
BUCKET = load_module(TF_DIR / "modules" / "bucket")
ALL = [ROOT, GPU, BUCKET]


def test_every_module_pins_terraform_and_bounds_the_provider():
    for mod in ALL:
        assert mod.terraform, f"{mod.path} has no terraform block"
        tf = mod.terraform[0]
        assert ">=" in tf["required_version"]
        google = (
            one(tf["required_providers"])["google"]
            if isinstance(tf["required_providers"], list)
            else tf["required_providers"]["google"]
        )
        assert google["source"] == "hashicorp/google"
        assert re.search(r">=\s*\d", google["version"]) and re.search(r"<\s*\d", google["version"]), (
            f"{mod.path}: provider version needs a lower and an upper bound, got {google['version']!r}"
        )


def test_variables_and_outputs_are_documented():
    for mod in ALL:
        for name, var in mod.variables.items():
            assert var.get("description"), f"{mod.path.name}: variable {name} has no description"
            assert "type" in var, f"{mod.path.name}: variable {name} has no type"
        for name, out in mod.outputs.items():
            assert out.get("description"), f"{mod.path.name}: output {name} has no description"


def test_key_variables_are_validated():
    for name in ("project_id", "region", "zone", "release_channel", "gpu_pools", "master_authorized_networks"):
        assert ROOT.variables[name].get("validation"), f"variable {name} has no validation"
    assert ROOT.variables["deletion_protection"]["default"] is True


def test_no_service_account_keys_or_static_credentials():
    forbidden = ("google_service_account_key", "google_storage_hmac_key", "google_apikeys_key")
    for mod in ALL:
        for rtype, name in mod.resources:
            assert rtype not in forbidden, f"{rtype}.{name}: no keys; use Workload Identity"
        for provider in mod.providers:
            for body in provider.values():
                assert not {"credentials", "access_token"} & set(body), (
                    "providers take Application Default Credentials only"
                )
        for fname, text in mod.files.items():
            assert "private_key" not in text and "BEGIN PRIVATE KEY" not in text, fname


def test_no_public_or_primitive_grants():
    iam_types = [
        t for mod in ALL for (t, _) in mod.resources if t.endswith("_iam_member") or t.endswith("_iam_binding")
    ]
    assert iam_types, "expected IAM grants"
    for mod in ALL:
        for (rtype, name), body in mod.resources.items():
            if not (rtype.endswith("_iam_member") or rtype.endswith("_iam_binding") or rtype.endswith("_iam_policy")):
                continue
            assert not rtype.endswith("_iam_policy"), (
                f"{rtype}.{name}: authoritative policies would drop others' grants"
            )
            member = str(body.get("member", body.get("members", "")))
            assert "allUsers" not in member and "allAuthenticatedUsers" not in member, f"{rtype}.{name} is public"
            assert body["role"] not in ("roles/owner", "roles/editor", "roles/viewer"), (
                f"{rtype}.{name}: primitive role"
            )


# Project-level roles, by the identity that holds them. Workload identities
# (trainer, watcher) get none: their grants are on single buckets/subscriptions.
PROJECT_GRANTS = {
    "${google_service_account.nodes.member}": {
        "roles/container.defaultNodeServiceAccount",
        "roles/serviceusage.serviceUsageConsumer",
    },
    "${google_service_account.build[0].member}": {"roles/logging.logWriter"},
    "${google_service_account.ci_deploy[0].member}": {
        "roles/cloudbuild.builds.editor",
        "roles/container.developer",
        "${each.key}",
    },
    "${google_service_account.ci_plan[0].member}": {"${each.key}"},
}


def test_project_level_grants_only_for_infrastructure_identities():
    grants = ROOT.of_type("google_project_iam_member")
    assert grants, "the node service account needs its node role"
    for name, body in grants.items():
        assert body["member"] in PROJECT_GRANTS, f"project-level grant {name} for {body['member']}"
        assert body["role"] in PROJECT_GRANTS[body["member"]], f"{name}: {body['role']}"
        assert "trainer" not in body["member"] and "watcher" not in body["member"]
    assert grants["nodes"]["role"] == "roles/container.defaultNodeServiceAccount"
    assert grants["nodes_service_usage"]["role"] == "roles/serviceusage.serviceUsageConsumer"
    ci_deploy_roles = " ".join(str(v) for v in grants["ci_deploy_builds"].values())
    assert "roles/cloudbuild.builds.editor" in ci_deploy_roles


def test_ci_plan_roles_are_read_only():
    roles = re.search(r"ci_plan_roles = toset\(\[(.*?)\]\)", ROOT.files["github.tf"], re.S)
    assert roles, "github.tf lists the plan identity's roles"
    for role in re.findall(r'"([^"]+)"', roles.group(1)):
        assert role not in ("roles/owner", "roles/editor", "roles/viewer"), role
        assert re.search(r"(viewer|Viewer|reader|securityReviewer)$", role), f"{role} is not read-only"


def test_service_agents_exist_before_they_are_granted_anything():
    kms = ROOT.of_type("google_kms_crypto_key_iam_member")
    for name in ("pubsub_agent", "ar_agent", "gke_agent"):
        assert "terraform_data.service_agent" in str(kms[name]["depends_on"]), name
    agents = ROOT.of_type("terraform_data")["service_agent"]
    assert "gcloud beta services identity create --service=${each.key}" in str(agents["provisioner"])
    for rtype, name in (
        ("google_pubsub_topic_iam_member", "dead_letter_publisher"),
        ("google_pubsub_subscription_iam_member", "dead_letter_subscriber"),
        ("google_pubsub_subscription_iam_member", "requests_dead_letter_subscriber"),
    ):
        assert "terraform_data.service_agent" in str(ROOT.of_type(rtype)[name]["depends_on"]), name


def test_apis_are_never_disabled_on_destroy():
    for name, body in ROOT.of_type("google_project_service").items():
        assert body["disable_on_destroy"] is False and body["disable_dependent_services"] is False, name


def test_webhook_firewall_rule_targets_the_nodes_from_the_control_plane():
    rule = ROOT.of_type("google_compute_firewall")["master_webhooks"]
    assert rule["source_ranges"] == ["${var.master_ipv4_cidr_block}"]
    assert rule["target_service_accounts"] == ["${google_service_account.nodes.email}"]
    assert rule["direction"] == "INGRESS"


def test_workloads_are_bound_through_workload_identity():
    bindings = ROOT.of_type("google_service_account_iam_member")
    assert {"trainer_workload_identity", "watcher_workload_identity"} <= set(bindings)
    for name in ("trainer_workload_identity", "watcher_workload_identity"):
        body = bindings[name]
        assert body["role"] == "roles/iam.workloadIdentityUser", name
        assert re.search(
            r"workload_pool\}\[\$\{var\.k8s_namespace\}/\$\{var\.(trainer|watcher)_ksa\}\]$", body["member"]
        ), body["member"]
    # The other service-account grants: GitHub federation (one repository, the
    # deploy identity one branch) and CI acting as the build service account.
    others = {n: b for n, b in bindings.items() if n not in ("trainer_workload_identity", "watcher_workload_identity")}
    assert others["ci_deploy_wif"]["member"] == "${local.github_pool_set}/attribute.repo_ref/${local.github_deploy}"
    assert others["ci_plan_wif"]["member"].startswith("${local.github_pool_set}/attribute.repository/")
    assert others["ci_deploy_acts_as_build"]["role"] == "roles/iam.serviceAccountUser"
    assert set(others) == {"ci_deploy_wif", "ci_plan_wif", "ci_deploy_acts_as_build"}
    assert ROOT.variables["trainer_ksa"]["default"] == "jobgen-trainer"
    assert ROOT.variables["watcher_ksa"]["default"] == "retrain-watcher"
    assert ROOT.variables["k8s_namespace"]["default"] == "training"


def test_workload_grants_match_their_jobs():
    def grant(rtype, name):
        return ROOT.of_type(rtype)[name]

    assert grant("google_storage_bucket_iam_member", "trainer_data_viewer")["role"] == "roles/storage.objectViewer"
    assert grant("google_storage_bucket_iam_member", "trainer_models_admin")["role"] == "roles/storage.objectAdmin"
    assert grant("google_storage_bucket_iam_member", "trainer_checkpoints_admin")["role"] == "roles/storage.objectAdmin"
    assert grant("google_storage_bucket_iam_member", "watcher_data_viewer")["role"] == "roles/storage.objectViewer"
    sub = grant("google_pubsub_subscription_iam_member", "watcher_subscriber")
    assert (
        sub["role"] == "roles/pubsub.subscriber" and sub["subscription"] == "${google_pubsub_subscription.watcher.id}"
    )


def test_cluster_is_private_with_workload_identity_and_hardened():
    cluster = ROOT.of_type("google_container_cluster")["this"]
    pcc = one(cluster["private_cluster_config"])
    assert pcc["enable_private_nodes"] is True
    assert one(cluster["workload_identity_config"])["workload_pool"] == "${local.workload_pool}"
    assert cluster["enable_shielded_nodes"] is True
    assert cluster["datapath_provider"] == "ADVANCED_DATAPATH"
    assert cluster["deletion_protection"] == "${var.deletion_protection}"
    assert cluster["remove_default_node_pool"] is True
    assert "master_authorized_networks_config" in cluster
    assert one(one(cluster["addons_config"])["gcs_fuse_csi_driver_config"])["enabled"] is True
    assert one(cluster["release_channel"])["channel"] == "${var.release_channel}"
    assert one(one(cluster["master_auth"])["client_certificate_config"])["issue_client_certificate"] is False
    nat = ROOT.of_type("google_compute_router_nat")
    assert nat, "private nodes need Cloud NAT"


def node_configs():
    pools = [("system", one(ROOT.of_type("google_container_node_pool")["system"]["node_config"]))]
    pools.append(("gpu-node-pool", one(GPU.of_type("google_container_node_pool")["this"]["node_config"])))
    pools.append(("default pool", one(ROOT.of_type("google_container_cluster")["this"]["node_config"])))
    return pools


@pytest.mark.parametrize("name,config", node_configs(), ids=lambda x: x if isinstance(x, str) else "")
def test_every_node_pool_uses_gke_metadata_shielded_nodes_and_the_node_sa(name, config):
    assert one(config["workload_metadata_config"])["mode"] == "GKE_METADATA", name
    shielded = one(config["shielded_instance_config"])
    assert shielded["enable_secure_boot"] is True and shielded["enable_integrity_monitoring"] is True, name
    assert config["service_account"] in ("${google_service_account.nodes.email}", "${var.service_account}"), name
    assert config["metadata"]["disable-legacy-endpoints"] == "true", name


def test_gpu_pools_taint_scale_from_zero_and_install_drivers():
    pool = GPU.of_type("google_container_node_pool")["this"]
    config = one(pool["node_config"])
    taint = dynamic(config, "taint")
    assert taint is not None and "local.gpu_taint" in taint["for_each"]
    assert GPU.files["main.tf"].count('key    = "nvidia.com/gpu"') == 1
    assert re.search(
        r'gpu_taint = \{\s*key\s*= "nvidia.com/gpu"\s*value\s*= "present"\s*effect\s*= "NO_SCHEDULE"',
        GPU.files["main.tf"],
    )
    autoscaling = one(pool["autoscaling"])
    assert autoscaling["total_min_node_count"] == "${var.min_nodes}"
    assert GPU.variables["min_nodes"]["default"] == 0
    assert re.search(r"min_nodes\s+= optional\(number, 0\)", ROOT.files["variables.tf"]), (
        "gpu_pools min_nodes must default to 0"
    )
    accel = one(config["guest_accelerator"])
    assert one(accel["gpu_driver_installation_config"])["gpu_driver_version"] == "${var.gpu_driver_version}"


def test_capacity_rules_are_enforced_twice():
    """Root variable validations (clear messages naming pools) and module preconditions (for any caller)."""
    root_rules = " ".join(str(v["condition"]) for v in ROOT.variables["gpu_pools"]["validation"])
    for needle in (
        'p.queued_provisioning || p.reservation == "NO_RESERVATION"',
        "p.queued_provisioning || p.min_nodes == 0",
        "p.queued_provisioning && p.spot",
        '!p.spot || p.reservation == "NO_RESERVATION"',
        "length(p.zones) == 1",
    ):
        assert needle in root_rules, needle
    pre = one(GPU.of_type("google_container_node_pool")["this"]["lifecycle"])["precondition"]
    conditions = " ".join(p["condition"] for p in pre)
    for needle in (
        '!var.spot || var.reservation_affinity == "NO_RESERVATION"',
        "!var.queued_provisioning || var.min_nodes == 0",
        "var.queued_provisioning && var.spot",
        "length(var.zones) == 1",
        "length(local.missing_zones) == 0",
    ):
        assert needle in conditions, needle
    for p in pre:
        assert p["error_message"].startswith("GPU pool ${var.name}: "), p["error_message"]


def test_buckets_enforce_pap_and_ubla_everywhere():
    buckets = [
        (mod.path.name, n, b) for mod in ALL for (t, n), b in mod.resources.items() if t == "google_storage_bucket"
    ]
    assert [(m, n) for m, n, _ in buckets] == [("bucket", "this")], "buckets are made only through modules/bucket"
    body = buckets[0][2]
    assert body["public_access_prevention"] == "enforced"
    assert body["uniform_bucket_level_access"] is True
    assert dynamic(body, "encryption") is not None, "CMEK must be possible"
    calls = {n: m for n, m in ROOT.modules.items() if m["source"] == "./modules/bucket"}
    assert set(calls) == {"bucket_data", "bucket_models", "bucket_checkpoints", "bucket_watcher_state", "bucket_build"}
    assert calls["bucket_models"]["versioning"] is True
    assert calls["bucket_checkpoints"]["delete_after_days"] == "${var.checkpoint_retention_days}"
    for call in calls.values():
        assert call["kms_key_name"] == "${var.kms_key_name}"


def test_notification_waits_for_the_publisher_grant():
    notif = ROOT.of_type("google_storage_notification")["data_finalize"]
    assert notif["payload_format"] == "JSON_API_V1"
    assert notif["event_types"] == ["OBJECT_FINALIZE"]
    assert "google_pubsub_topic_iam_member.gcs_publisher" in str(notif["depends_on"])
    grant = ROOT.of_type("google_pubsub_topic_iam_member")["gcs_publisher"]
    assert grant["member"] == "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
    assert ("google_storage_project_service_account", "gcs") in ROOT.data


def test_watcher_subscription_has_retries_and_dead_letters():
    sub = ROOT.of_type("google_pubsub_subscription")["watcher"]
    assert "ack_deadline_seconds" in sub and one(sub["retry_policy"])
    dl = one(sub["dead_letter_policy"])
    assert dl["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert (
        ROOT.of_type("google_pubsub_topic_iam_member")["dead_letter_publisher"]["member"]
        == "serviceAccount:${local.pubsub_agent}"
    )
    assert (
        ROOT.of_type("google_pubsub_subscription_iam_member")["dead_letter_subscriber"]["member"]
        == "serviceAccount:${local.pubsub_agent}"
    )


def test_outputs_cover_what_make_cluster_and_the_chart_need():
    needed = {
        "cluster_name",
        "cluster_location",
        "data_bucket",
        "models_bucket",
        "checkpoints_bucket",
        "watcher_subscription",
        "trainer_ksa",
        "watcher_ksa",
        "image_repository",
        "watcher_helm_values",
        "k8s_namespace",
        "data_notification_prefix",
        "watcher_state_bucket",
        "build_service_account",
        "build_bucket",
        "managed_prometheus",
    }
    assert needed <= set(ROOT.outputs)


def test_example_tfvars_parse_and_cover_the_pool_kinds():
    pools = {}
    for f in sorted((TF_DIR / "examples").glob("*.tfvars")):
        doc = load(f)
        assert doc["project_id"]
        for p in doc["gpu_pools"]:
            pools[p["name"]] = p
    assert any(p.get("queued_provisioning") for p in pools.values()), "a DWS example"
    assert any(p.get("spot") for p in pools.values()), "a spot example"
    assert any(p.get("placement_policy") == "COMPACT" for p in pools.values()), "a COMPACT example"
    for p in pools.values():
        assert p.get("min_nodes", 0) == 0
    load(TF_DIR / "terraform.tfvars.example")


def test_static_checks_can_fail(tmp_path: Path):
    """The parser sees a violation: a bucket without PAP enforced is caught."""
    bad = tmp_path / "mod"
    bad.mkdir()
    (bad / "main.tf").write_text(
        'resource "google_storage_bucket" "b" {\n  name = "x"\n  public_access_prevention = "inherited"\n}\n'
    )
    mod = load_module(bad)
    assert mod.of_type("google_storage_bucket")["b"]["public_access_prevention"] != "enforced"
