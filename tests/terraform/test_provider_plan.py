"""terraform validate and `terraform test` (mock_provider, plan only) with the
google provider built from source; skipped with the reason when it is not built."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from .conftest import TF_DIR, copy_tf, require_provider, run_tf, versions


def test_provider_build_script_pins_a_pseudo_version():
    v = versions()
    assert re.fullmatch(r"\d+\.\d+\.\d+", v["TF_GOOGLE_PROVIDER_VERSION"])
    # Release tags (v8.x) are not valid Go module versions for this module path.
    assert re.fullmatch(r"v\d+\.\d+\.\d+-0\.\d{14}-[0-9a-f]{12}", v["TF_GOOGLE_PROVIDER_MODULE_VERSION"])


def test_validate(tf_initialised: Path):
    res = run_tf(tf_initialised, "validate")
    assert res.returncode == 0, res.stdout + res.stderr


def test_terraform_test_root_and_module(tf_initialised: Path):
    res = run_tf(tf_initialised, "test", timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"(\d+) passed, (\d+) failed", res.stdout)
    assert m and int(m.group(1)) >= 30 and m.group(2) == "0", res.stdout


EXAMPLES = sorted(p.stem for p in (TF_DIR / "examples").glob("*.tfvars"))
# name of the test file -> the tfvars it plans
PLANNED = {**{n: f"examples/{n}.tfvars" for n in EXAMPLES}, "starter": "terraform.tfvars.example"}


def test_every_example_has_plan_tests():
    assert set(EXAMPLES) >= {"gpu-pools", "dws", "spot"}
    for name in EXAMPLES:
        assert (TF_DIR / "tests" / "examples" / f"{name}.tftest.hcl").is_file(), (
            f"examples/{name}.tfvars has no plan test"
        )


@pytest.mark.parametrize("name", sorted(PLANNED))
def test_example_plans(tf_initialised: Path, name: str):
    res = run_tf(
        tf_initialised,
        "test",
        "-test-directory=tests/examples",
        f"-filter=tests/examples/{name}.tftest.hcl",
        f"-var-file={PLANNED[name]}",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.search(r"[1-9]\d* passed, 0 failed", res.stdout), res.stdout


BASE_VARS = """
    project_id = "jobgen-test-project"
    master_authorized_networks = [{ cidr_block = "203.0.113.0/24", display_name = "office" }]
"""

MESSAGES = {
    "queued_and_spot": (
        'gpu_pools = [{ name = "h100-dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb", '
        "accelerator_count = 8, max_nodes = 2, queued_provisioning = true, spot = true }]",
        "queued_provisioning excludes spot: h100-dws.",
    ),
    "queued_min_nodes": (
        'gpu_pools = [{ name = "dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb", '
        "accelerator_count = 8, min_nodes = 2, max_nodes = 4, queued_provisioning = true }]",
        "queued_provisioning needs min_nodes = 0: dws.",
    ),
    "spot_reservation": (
        'gpu_pools = [{ name = "l4-spot", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", '
        'accelerator_count = 1, max_nodes = 2, spot = true, reservation = "ANY_RESERVATION" }]',
        'spot needs reservation = "NO_RESERVATION": l4-spot.',
    ),
    "compact_zones": (
        'gpu_pools = [{ name = "packed", machine_type = "g2-standard-8", accelerator_type = "nvidia-l4", '
        'accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT" }]',
        "COMPACT placement needs exactly one zone in zones: packed.",
    ),
    "zone_lacks_gpu": (
        # The mock's g2-standard-8 carries L4s, so no zone offers it with A100s.
        'gpu_pools = [{ name = "a100", machine_type = "g2-standard-8", accelerator_type = "nvidia-tesla-a100", '
        'accelerator_count = 1, max_nodes = 2, zones = ["us-central1-a"] }]',
        "GPU pool a100: zone(s) us-central1-a do not offer g2-standard-8 with nvidia-tesla-a100.",
    ),
    "compact_on_n1": (
        'gpu_pools = [{ name = "t4", machine_type = "n1-standard-8", accelerator_type = "nvidia-tesla-t4", '
        'accelerator_count = 1, max_nodes = 2, placement_policy = "COMPACT", zones = ["us-central1-a"] }]',
        "COMPACT placement is supported only on machine series a2, a3, a4, c2, c2d, c3, c3d, c4, c4a, c4d, g2, h3, "
        "h4d, n2, n2d: t4 (n1-standard-8).",
    ),
    "prefix_without_slash": (
        'data_notification_prefix = "incoming"',
        'data_notification_prefix must be "" or a folder ending with "/"',
    ),
    "adopt_unknown_bucket": (
        'adopt_existing_buckets = ["logs"]',
        "adopt_existing_buckets entries must be data, models, checkpoints, watcher-state or build.",
    ),
}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_rejections_explain_themselves(tf_initialised: Path, tmp_path: Path, case: str):
    """A bad pool fails the plan with one clear sentence naming the pool.

    Runs a throwaway test file without expect_failures, so terraform prints the
    diagnostic, in a copy of the initialised directory."""
    work = tmp_path / "terraform"
    shutil.copytree(tf_initialised, work, symlinks=True)
    pools, message = MESSAGES[case]
    (work / "tests" / "zz_message.tftest.hcl").write_text(
        'mock_provider "google" {\n  source = "./tests/mocks"\n}\n'
        f"variables {{\n{BASE_VARS}\n    {pools}\n}}\n"
        'run "bad" {\n  command = plan\n}\n'
    )
    res = run_tf(work, "test", "-filter=tests/zz_message.tftest.hcl")
    assert res.returncode != 0
    flat = " ".join(res.stderr.replace("│", " ").split()) + " " + " ".join(res.stdout.replace("│", " ").split())
    assert message in flat, res.stdout + res.stderr


def test_mutation_removing_a_precondition_fails_the_module_tests(tmp_path: Path):
    """The module's rejection tests fail when the rule they test is removed."""
    mirror = require_provider()
    work = copy_tf(tmp_path / "terraform")
    main = work / "modules" / "gpu-node-pool" / "main.tf"
    text = main.read_text()
    rule = 'condition     = !var.spot || var.reservation_affinity == "NO_RESERVATION"'
    assert rule in text
    main.write_text(text.replace(rule, "condition     = var.spot == var.spot"))
    assert run_tf(work, "init", "-backend=false", "-input=false", f"-plugin-dir={mirror}").returncode == 0
    res = run_tf(work, "test", "-filter=tests/gpu_node_pool_module.tftest.hcl")
    assert res.returncode != 0
    assert re.search(r'run "spot_with_reservation_rejected"\.\.\. fail', res.stdout), res.stdout
    shutil.rmtree(work / ".terraform", ignore_errors=True)


# Fixes of issue 13 and the `terraform test` run that guards each: undoing the
# fix makes that run fail (validations are covered by expect_failures runs,
# which fail by themselves when the validation goes). ~75 s per case on 2 cores.
MUTATIONS = {
    "webhook_port": (
        "variables.tf",
        "default     = [9443]",
        "default     = [443]",
        "private_control_plane_reaches_the_webhooks",
    ),
    "service_usage": (
        "iam.tf",
        'role    = "roles/serviceusage.serviceUsageConsumer"',
        'role    = "roles/logging.logWriter"',
        "image_streaming_has_its_prerequisites",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_mutation_undoing_a_fix_fails_its_test(tf_initialised: Path, tmp_path: Path, case: str):
    fname, old, new, run = MUTATIONS[case]
    work = tmp_path / "terraform"
    shutil.copytree(tf_initialised, work, symlinks=True)
    path = work / fname
    text = path.read_text()
    assert text.count(old) == 1, f"{fname}: {old!r} not found once"
    path.write_text(text.replace(old, new))
    res = run_tf(work, "test", "-filter=tests/first_apply.tftest.hcl")
    assert res.returncode != 0
    assert re.search(rf'run "{run}"\.\.\. fail', res.stdout), res.stdout
