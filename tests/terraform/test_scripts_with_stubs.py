"""PLUMBING ONLY: hack/terraform/{cluster,images,destroy}.sh (what `make
cluster`, `make images` and `make destroy` run) with stub gcloud, terraform,
kubectl, helm, make and docker on PATH.

The stubs record their arguments and answer canned values, so these tests
show the order of steps, the arguments passed and the one-line errors when a
prerequisite is missing. They are NOT evidence that the targets work against
GCP: that needs a real project (see docs/terraform.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import HACK, REPO, TF_DIR, copy_tf, require_provider

REQUIRED_APIS = (
    "cloudresourcemanager.googleapis.com serviceusage.googleapis.com iam.googleapis.com iamcredentials.googleapis.com "
    "compute.googleapis.com container.googleapis.com storage.googleapis.com pubsub.googleapis.com "
    "artifactregistry.googleapis.com logging.googleapis.com monitoring.googleapis.com cloudbuild.googleapis.com "
    "containerfilesystem.googleapis.com"
)

BUCKETS = {p: f"jobgen-test-project-jobgen-{p}" for p in ("data", "models", "checkpoints", "watcher-state", "build")}


def settings(pools: list[dict] | None = None, **kw: object) -> str:
    """What `terraform console` prints for preflight.sh's settings expression: an HCL string of JSON."""
    doc = {
        "region": "us-central1",
        "image_streaming": True,
        "cloud_build": True,
        "github": False,
        "kms": False,
        "gke_kms": False,
        "buckets": BUCKETS,
        "pools": pools or [],
    }
    doc.update(kw)
    return json.dumps(json.dumps(doc))


def pool(
    name: str, type_: str, zones: list[str], count: int = 1, max_nodes: int = 2, preemptible: bool = False
) -> dict:
    return {
        "name": name,
        "type": type_,
        "count": count,
        "max_nodes": max_nodes,
        "preemptible": preemptible,
        "zones": zones,
    }


QUOTAS = json.dumps(
    {
        "quotas": [
            {"metric": "NVIDIA_T4_GPUS", "limit": 4.0, "usage": 0.0},
            {"metric": "NVIDIA_L4_GPUS", "limit": 8.0, "usage": 7.0},
            {"metric": "PREEMPTIBLE_NVIDIA_L4_GPUS", "limit": 0.0, "usage": 0.0},
            {"metric": "PREEMPTIBLE_NVIDIA_T4_GPUS", "limit": 8.0, "usage": 0.0},
            {"metric": "PREEMPTIBLE_NVIDIA_A100_GPUS", "limit": 16.0, "usage": 0.0},
        ]
    }
)

SYSTEM_TOOLS = [
    "bash",
    "env",
    "sed",
    "grep",
    "head",
    "tail",
    "tr",
    "cut",
    "sort",
    "python3",
    "mkdir",
    "rm",
    "dirname",
    "basename",
    "realpath",
    "cat",
    "find",
    "mktemp",
    "date",
    "touch",
    "ls",
    "flock",
    "git",
    "tar",
    "wc",
]

GCLOUD = r"""#!/usr/bin/env bash
echo "gcloud $*" >>"$STUB_LOG"
case "$*" in
  "auth list"*) [[ -n "${STUB_NO_ACCOUNT:-}" ]] || echo "dev@example.com" ;;
  "config get-value project"*) echo "${STUB_GCLOUD_PROJECT:-}" ;;
  "projects describe"*) [[ "$3" == "jobgen-test-project" ]] && echo "$3" || exit 1 ;;
  "auth application-default print-access-token"*) [[ -n "${STUB_NO_ADC:-}" ]] && exit 1; echo token ;;
  "services list"*) printf '%s\n' $STUB_ENABLED_APIS ;;
  "services enable"*) ;;
  "compute accelerator-types list"*) printf '%s\n' ${STUB_ACCEL_ZONES:-} ;;
  "compute regions describe"*) echo "$STUB_QUOTAS" ;;
  "beta services identity create"*) [[ -z "${STUB_NO_AGENT:-}" ]] ;;
  "storage buckets describe"*)
    for b in ${STUB_EXISTING_BUCKETS:-}; do [[ "$4" == "gs://$b" ]] && exit 0; done
    exit 1 ;;
  "container clusters get-credentials"*) ;;
  "artifacts docker images describe"*) [[ -z "${STUB_IMAGE_MISSING:-}" ]] ;;
  "builds submit"*)
    args=("$@")
    for i in "${!args[@]}"; do [[ "${args[$i]}" == --config ]] && cat "${args[$((i + 1))]}" >>"$STUB_LOG"; done; true ;;
  "auth configure-docker"*) ;;
  *) echo "stub gcloud: unexpected: $*" >&2; exit 3 ;;
esac
"""

TERRAFORM = r"""#!/usr/bin/env bash
echo "terraform $*" >>"$STUB_LOG"
args=("$@")
[[ "${args[0]}" == -chdir=* ]] && args=("${args[@]:1}")
case "${args[0]}" in
  version) echo "{\"terraform_version\": \"${STUB_TF_VERSION:-1.11.4}\"}" ;;
  init|destroy) ;;
  state) [[ "${args[1]}" == list ]] && printf '%s\n' ${STUB_TF_STATE:-}; true ;;
  apply) [[ -z "${STUB_TF_APPLY_FAIL:-}" ]] || { echo "Error: quota exceeded" >&2; exit 1; } ;;
  console) cat >/dev/null; echo "$STUB_TF_SETTINGS" ;;
  output)
    case "${args[*]}" in
      "output -raw cluster_name") printf jobgen ;;
      "output -raw cluster_location") printf us-central1 ;;
      "output -raw k8s_namespace") printf training ;;
      "output -raw data_bucket") printf jobgen-test-project-jobgen-data ;;
      "output -raw data_notification_prefix") printf incoming/ ;;
      "output -raw image_repository") printf us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images ;;
      "output -raw watcher_helm_values") printf 'gcp:\n  project: jobgen-test-project\n' ;;
      "output -raw build_service_account") printf jobgen-build@jobgen-test-project.iam.gserviceaccount.com ;;
      "output -raw build_bucket") printf jobgen-test-project-jobgen-build ;;
      "output -json github_service_accounts")
        [[ -n "${STUB_GITHUB:-}" ]] || { echo null; exit 0; }
        echo '{"deploy":"jobgen-ci-deploy@jobgen-test-project.iam.gserviceaccount.com","plan":"p@x"}' ;;
      "output -json trainer_ksa")
        gsa=jobgen-trainer@jobgen-test-project.iam.gserviceaccount.com
        echo '{"namespace":"training","name":"jobgen-trainer","google_service_account":"'"$gsa"'"}' ;;
      *) exit 1 ;;
    esac ;;
  *) echo "stub terraform: unexpected: $*" >&2; exit 3 ;;
esac
"""

RECORDER = r"""#!/usr/bin/env bash
echo "NAME $*" >>"$STUB_LOG"
"""

HELM = r"""#!/usr/bin/env bash
echo "helm $*" >>"$STUB_LOG"
[[ "$1" == version ]] && echo "v${STUB_HELM_VERSION:-3.22.0}"
true
"""


@pytest.fixture
def stubs(tmp_path: Path):
    stub = tmp_path / "stubs"
    sysbin = tmp_path / "sysbin"
    stub.mkdir()
    sysbin.mkdir()
    for tool in SYSTEM_TOOLS:
        # python3 may be a pyenv shim that needs pyenv on PATH: use this interpreter.
        real = sys.executable if tool == "python3" else shutil.which(tool)
        if real:
            (sysbin / tool).symlink_to(real)
    scripts = {"gcloud": GCLOUD, "terraform": TERRAFORM}
    for name in ("kubectl", "make", "docker", "gke-gcloud-auth-plugin"):
        scripts[name] = RECORDER.replace("NAME", name)
    scripts["helm"] = HELM
    for name, text in scripts.items():
        (stub / name).write_text(text)
        (stub / name).chmod(0o755)
    tf_dir = tmp_path / "terraform"
    tf_dir.mkdir()
    (tf_dir / "terraform.tfvars").write_text('project_id = "jobgen-test-project"\nregion = "us-central1"\n')
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: retrain-watcher\nversion: 0.1.0\n")
    log = tmp_path / "calls.log"
    env = {
        "PATH": f"{stub}:{sysbin}",
        "HOME": str(tmp_path),
        "STUB_LOG": str(log),
        "STUB_ENABLED_APIS": REQUIRED_APIS,
        "TF_DIR": str(tf_dir),
        "WATCHER_CHART": str(chart),
        "AUTO_APPROVE": "1",
        "STUB_TF_SETTINGS": settings(),
        "STUB_QUOTAS": QUOTAS,
    }

    class Stubs:
        dir = stub
        root = tmp_path

        def run(self, script: str, _args: list[str] | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(sysbin / "bash"), str(HACK / script), *(_args or [])],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
                check=False,
            )

        def calls(self) -> list[str]:
            return log.read_text().splitlines() if log.exists() else []

        def remove(self, name: str) -> None:
            (stub / name).unlink()

    return Stubs()


def index(calls: list[str], prefix: str) -> int:
    for i, c in enumerate(calls):
        if c.startswith(prefix):
            return i
    raise AssertionError(f"no call starting with {prefix!r} in:\n" + "\n".join(calls))


def test_cluster_runs_every_step_in_order(stubs):
    res = stubs.run("cluster.sh")
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    order = [
        index(calls, "gcloud services list --enabled --project jobgen-test-project"),
        index(calls, f"terraform -chdir={stubs.root}/terraform init -input=false"),
        index(
            calls,
            f"terraform -chdir={stubs.root}/terraform apply -input=false "
            f"-var-file={stubs.root}/terraform/terraform.tfvars -auto-approve",
        ),
        index(
            calls,
            "gcloud container clusters get-credentials jobgen --location us-central1 --project jobgen-test-project",
        ),
        index(calls, f"kubectl apply --server-side -k {stubs.root}/terraform/generated/k8s"),
        index(
            calls,
            f"helm upgrade --install retrain-watcher {stubs.root}/chart --namespace training --values "
            f"{stubs.root}/terraform/generated/watcher-values.yaml",
        ),
    ]
    assert order == sorted(order), "\n".join(calls)
    _, tag = git_tag()
    helm = calls[index(calls, "helm upgrade --install")]
    repo = "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images"
    assert f"--set-string image.tag={tag} --set-string jobs.train.image={repo}/trainer:{tag} --wait" in helm, helm
    overlay = (stubs.root / "terraform" / "generated" / "k8s" / "training" / "kustomization.yaml").read_text()
    assert "namespace: training" in overlay and "value: jobgen-trainer" in overlay
    assert "iam.gke.io/gcp-service-account: jobgen-trainer@jobgen-test-project.iam.gserviceaccount.com" in overlay
    apply = calls[index(calls, f"terraform -chdir={stubs.root}/terraform apply")]
    assert "adopt_existing_buckets" not in apply, "no bucket exists: nothing to adopt"
    assert not any(c.startswith("gcloud builds submit") for c in calls), "the image is there: nothing is built"
    values = (stubs.root / "terraform" / "generated" / "watcher-values.yaml").read_text()
    assert values == "gcp:\n  project: jobgen-test-project\n"
    assert (
        "Next:" in res.stdout
        and "make images" in res.stdout
        and "gs://jobgen-test-project-jobgen-data/incoming/" in res.stdout
    )


@pytest.mark.parametrize(
    "missing,message",
    [
        ("gcloud", "cluster: error: gcloud not found on PATH: install the Google Cloud CLI"),
        ("terraform", "cluster: error: terraform not found on PATH: install Terraform >= 1.9"),
        ("kubectl", "cluster: error: kubectl not found on PATH"),
        ("helm", "cluster: error: helm not found on PATH: install Helm 3"),
        (
            "gke-gcloud-auth-plugin",
            "cluster: error: gke-gcloud-auth-plugin not found on PATH: kubectl needs it to log in to GKE: "
            "run 'gcloud components install gke-gcloud-auth-plugin'",
        ),
    ],
)
def test_cluster_names_the_missing_tool(stubs, missing, message):
    stubs.remove(missing)
    res = stubs.run("cluster.sh")
    assert res.returncode == 1
    assert res.stderr.startswith(message), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, "one line, no trace"
    assert not any(c.startswith("terraform -chdir") for c in stubs.calls()), "nothing runs before the checks pass"


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"STUB_NO_ACCOUNT": "1"}, "gcloud has no active account: run 'gcloud auth login'"),
        ({"STUB_TF_VERSION": "1.5.7"}, "Terraform >= 1.9 is needed, found 1.5.7"),
        ({"STUB_NO_ADC": "1"}, "no Application Default Credentials for Terraform"),
        (
            {"STUB_ENABLED_APIS": "compute.googleapis.com"},
            "required APIs are disabled in jobgen-test-project: cloudresourcemanager.googleapis.com",
        ),
        ({"PROJECT": "someone-elses-project"}, "project 'someone-elses-project' not found or not accessible"),
        ({"SKIP_WATCHER": "0", "WATCHER_CHART": "/nonexistent/chart"}, "/nonexistent/chart/Chart.yaml not found"),
        ({"STUB_TF_APPLY_FAIL": "1"}, "terraform apply failed"),
        (
            {
                "STUB_TF_SETTINGS": settings([pool("t4", "nvidia-tesla-t4", ["us-central1-f"])]),
                "STUB_ACCEL_ZONES": "us-central1-a us-central1-b",
            },
            "GPU pool t4: zone us-central1-f does not offer nvidia-tesla-t4",
        ),
        (
            {"STUB_ENABLED_APIS": REQUIRED_APIS.replace("containerfilesystem.googleapis.com", "")},
            "required APIs are disabled in jobgen-test-project: containerfilesystem.googleapis.com "
            "(enable them: gcloud services enable",
        ),
        (
            {"STUB_TF_SETTINGS": settings(github=True)},
            "required APIs are disabled in jobgen-test-project: sts.googleapis.com",
        ),
        ({"STUB_HELM_VERSION": "2.17.0"}, "Helm 3 >= 3.8.0 is needed, found 2.17.0"),
        (
            {"STUB_TF_SETTINGS": settings([pool("l4", "nvidia-l4", [], count=2, max_nodes=4)])},
            "GPU pool l4: quota NVIDIA_L4_GPUS in us-central1 is 8 with 7 in use, one node needs 2 "
            "(max_nodes needs 8): request more",
        ),
        (
            {"STUB_TF_SETTINGS": settings([pool("l4s", "nvidia-l4", [], preemptible=True)])},
            "GPU pool l4s: quota PREEMPTIBLE_NVIDIA_L4_GPUS in us-central1 is 0 with 0 in use, one node needs 1",
        ),
        (
            {"STUB_TF_SETTINGS": settings([pool("h", "nvidia-h100-80gb", [])])},
            "GPU pool h: region us-central1 has no NVIDIA_H100_GPUS quota: request it",
        ),
        (
            {"STUB_NO_AGENT": "1"},
            "the service agent of pubsub.googleapis.com could not be created: run 'gcloud beta "
            "services identity create --service=pubsub.googleapis.com --project jobgen-test-project'",
        ),
    ],
)
def test_cluster_prerequisite_errors_are_one_clear_line(stubs, extra, message):
    res = stubs.run("cluster.sh", **extra)
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("cluster: error: ") and message in last, res.stderr
    assert "Traceback" not in res.stderr


def test_cluster_enables_apis_when_asked(stubs):
    res = stubs.run("cluster.sh", STUB_ENABLED_APIS="compute.googleapis.com", ENABLE_APIS="1")
    assert res.returncode == 0, res.stderr
    assert any(c.startswith("gcloud services enable cloudresourcemanager.googleapis.com") for c in stubs.calls())


def test_cluster_accepts_zones_that_offer_the_gpu(stubs):
    res = stubs.run(
        "cluster.sh",
        STUB_TF_SETTINGS=settings([pool("t4", "nvidia-tesla-t4", ["us-central1-b"])]),
        STUB_ACCEL_ZONES="us-central1-a us-central1-b",
    )
    assert res.returncode == 0, res.stderr
    assert (
        "gcloud compute accelerator-types list --project jobgen-test-project "
        "--filter=name=nvidia-tesla-t4 --format=value(zone.basename())" in stubs.calls()
    )


def test_cluster_without_tfvars_says_what_to_copy(stubs):
    (stubs.root / "terraform" / "terraform.tfvars").unlink()
    res = stubs.run("cluster.sh")
    assert res.returncode == 1 and "copy terraform/terraform.tfvars.example" in res.stderr


def test_cluster_rejects_the_example_project_id(stubs):
    (stubs.root / "terraform" / "terraform.tfvars").write_text('project_id = "my-project-id"\n')
    res = stubs.run("cluster.sh")
    assert res.returncode == 1 and "still the example's 'my-project-id'" in res.stderr


CONTEXTS = {
    "trainer": ("images/trainer", "Dockerfile"),
    "tf-trainer": ("images", "tf-trainer/Dockerfile"),
    "watcher": (".", "images/watcher/Dockerfile"),
}


def git_tag() -> tuple[str, str]:
    full = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return full, full[:12] + ("-dirty" if dirty else "")


def test_images_builds_each_image_with_cloud_build_tagged_with_the_git_sha(stubs):
    full, tag = git_tag()
    res = stubs.run("images.sh")
    assert res.returncode == 0, res.stderr
    repo = "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images"
    assert res.stdout.split() == [f"{repo}/{i}:{tag}" for i in ("trainer", "tf-trainer", "watcher")]
    log = "\n".join(stubs.calls())
    for image, (context, dockerfile) in CONTEXTS.items():
        ctx = REPO if context == "." else REPO / context
        assert f"gcloud builds submit {ctx} --project jobgen-test-project --config " in log, (image, log)
        ref = f"{repo}/{image}:{tag}"
        assert (
            f'args: ["build", "-f", "{dockerfile}", "-t", "{ref}", "--build-arg", "IMAGE_REF={ref}", '
            f'"--build-arg", "GIT_SHA={full}", "."]'
        ) in log, log
        assert f'images: ["{ref}"]' in log


def test_images_with_docker_builds_from_each_context(stubs):
    full, tag = git_tag()
    (stubs.dir / "docker").write_text('#!/usr/bin/env bash\necho "docker $*" >>"$STUB_LOG"\n')
    res = stubs.run("images.sh", BUILDER="docker", IMAGES="watcher tf-trainer")
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    ref = f"us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images/watcher:{tag}"
    assert (
        f"docker build -f {REPO}/images/watcher/Dockerfile -t {ref} --build-arg IMAGE_REF={ref} "
        f"--build-arg GIT_SHA={full} {REPO}" in calls
    )
    assert f"docker push {ref}" in calls
    assert index(calls, "gcloud auth configure-docker us-central1-docker.pkg.dev") < index(calls, "docker build")
    assert any(
        c.startswith(f"docker build -f {REPO}/images/tf-trainer/Dockerfile") and c.endswith(f" {REPO}/images")
        for c in calls
    )


def test_images_names_a_missing_dockerfile(stubs):
    res = stubs.run("images.sh", IMAGES="nonesuch")
    assert res.returncode == 1 and res.stderr.strip() == "images: error: images/nonesuch/Dockerfile not found"


def test_images_with_docker_needs_an_engine(stubs):
    (stubs.dir / "docker").write_text("#!/usr/bin/env bash\nexit 1\n")
    res = stubs.run("images.sh", BUILDER="docker")
    assert res.returncode == 1 and "no Docker engine is running" in res.stderr


def test_images_rejects_an_unknown_builder(stubs):
    res = stubs.run("images.sh", BUILDER="kaniko")
    assert (
        res.returncode == 1
        and res.stderr.strip() == "images: error: BUILDER must be cloudbuild or docker, not 'kaniko'"
    )


def test_destroy_refuses_without_confirmation(stubs):
    res = stubs.run("destroy.sh")
    assert res.returncode == 1 and "rerun with CONFIRM=jobgen" in res.stderr
    assert not any(" apply " in c or " destroy " in c for c in stubs.calls())


def test_destroy_turns_protection_off_then_destroys(stubs):
    res = stubs.run("destroy.sh", CONFIRM="jobgen")
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    tfvars = f"-var-file={stubs.root}/terraform/terraform.tfvars"
    unprotect = index(
        calls,
        f"terraform -chdir={stubs.root}/terraform apply -input=false -auto-approve {tfvars} "
        "-var=deletion_protection=false -var=force_destroy_buckets=true -target=google_container_cluster.this",
    )
    destroy = index(
        calls,
        f"terraform -chdir={stubs.root}/terraform destroy -input=false -auto-approve {tfvars} "
        "-var=deletion_protection=false -var=force_destroy_buckets=true",
    )
    assert unprotect < destroy
    assert "-target=module.bucket_data" in calls[unprotect]


def test_destroy_can_keep_the_buckets(stubs):
    res = stubs.run("destroy.sh", CONFIRM="jobgen", KEEP_BUCKETS="1")
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    for b in ("module.bucket_data", "module.bucket_models", "module.bucket_checkpoints"):
        assert index(calls, f"terraform -chdir={stubs.root}/terraform state rm {b}") < index(
            calls, f"terraform -chdir={stubs.root}/terraform destroy"
        )
    assert not any("-target=module.bucket" in c for c in calls)


def test_tf_provider_check_reports_absence(tmp_path):
    """build-provider.sh --check answers from the cache without building."""
    res = subprocess.run(
        [str(HACK / "build-provider.sh"), "--check"],
        env={**os.environ, "JOBGEN_CACHE": str(tmp_path)},
        capture_output=True,
        check=False,
    )
    assert res.returncode == 1
    out = subprocess.run(
        [str(HACK / "build-provider.sh"), "--print-dir"],
        env={**os.environ, "JOBGEN_CACHE": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.stdout.strip() == f"{tmp_path}/terraform-providers"


REAL_TF_WRAPPER = r"""#!/usr/bin/env bash
# init, console and version go to the real terraform; the rest is stubbed
# (apply would need GCP credentials).
echo "terraform $*" >>"$STUB_LOG"
args=("$@")
[[ "${args[0]}" == -chdir=* ]] && args=("${args[@]:1}")
case "${args[0]}" in
  init|console|version) exec "$REAL_TERRAFORM" "$@" ;;
esac
exec "$STUB_TERRAFORM" "$@"
"""


def test_cluster_reads_gpu_pools_through_the_real_terraform(stubs, tmp_path):
    """With the real terraform for init (from the local provider mirror) and
    console, cluster.sh reads the pools of examples/spot.tfvars and asks gcloud
    about the zones of the N1 pool. apply and later steps stay stubbed."""
    mirror = require_provider()
    real = shutil.which("terraform")
    work = copy_tf(tmp_path / "tf-real")
    shutil.copy(TF_DIR / "examples" / "spot.tfvars", work / "terraform.tfvars")
    (work / "terraform.tfvars").write_text(
        (work / "terraform.tfvars").read_text().replace('"my-project-id"', '"jobgen-test-project"')
    )
    stub_tf = stubs.dir / "terraform-stub"
    (stubs.dir / "terraform").rename(stub_tf)
    (stubs.dir / "terraform").write_text(REAL_TF_WRAPPER)
    (stubs.dir / "terraform").chmod(0o755)
    rc = tmp_path / "terraformrc"
    rc.touch()
    res = stubs.run(
        "cluster.sh",
        TF_DIR=str(work),
        TF_PLUGIN_DIR=str(mirror),
        REAL_TERRAFORM=real,
        STUB_TERRAFORM=str(stub_tf),
        TF_CLI_CONFIG_FILE=str(rc),
        STUB_ACCEL_ZONES="us-central1-a us-central1-b",
        # No credentials are used, and nothing may try the metadata server.
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
    )
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    accel = [c for c in calls if c.startswith("gcloud compute accelerator-types list")]
    assert accel == [
        "gcloud compute accelerator-types list --project jobgen-test-project "
        "--filter=name=nvidia-tesla-t4 --format=value(zone.basename())",
        "gcloud compute accelerator-types list --project jobgen-test-project "
        "--filter=name=nvidia-tesla-a100 --format=value(zone.basename())",
    ]
    assert (work / ".terraform" / "providers").is_dir(), "init installed the provider from the mirror"

    # The same zone check rejects a zone gcloud does not list.
    res = stubs.run(
        "cluster.sh",
        TF_DIR=str(work),
        TF_PLUGIN_DIR=str(mirror),
        REAL_TERRAFORM=real,
        STUB_TERRAFORM=str(stub_tf),
        TF_CLI_CONFIG_FILE=str(rc),
        STUB_ACCEL_ZONES="us-central1-b",
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
    )
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (
        "cluster: error: GPU pool t4-spot: zone us-central1-a does not offer nvidia-tesla-t4 (zones "
        "that do: us-central1-b)"
    )


def test_cluster_reports_a_failed_validation_in_one_line(stubs, tmp_path):
    """terraform console exits 0 when a variable fails its validation; cluster.sh
    still stops before apply and says the validation's own message."""
    mirror = require_provider()
    work = copy_tf(tmp_path / "tf-real")
    (work / "terraform.tfvars").write_text(
        'project_id = "jobgen-test-project"\n'
        'gpu_pools = [{ name = "h100-dws", machine_type = "a3-highgpu-8g", accelerator_type = "nvidia-h100-80gb",'
        " accelerator_count = 8, max_nodes = 2, queued_provisioning = true, spot = true }]\n"
    )
    stub_tf = stubs.dir / "terraform-stub"
    (stubs.dir / "terraform").rename(stub_tf)
    (stubs.dir / "terraform").write_text(REAL_TF_WRAPPER)
    (stubs.dir / "terraform").chmod(0o755)
    rc = tmp_path / "terraformrc"
    rc.touch()
    res = stubs.run(
        "cluster.sh",
        TF_DIR=str(work),
        TF_PLUGIN_DIR=str(mirror),
        REAL_TERRAFORM=shutil.which("terraform"),
        STUB_TERRAFORM=str(stub_tf),
        TF_CLI_CONFIG_FILE=str(rc),
        GCE_METADATA_HOST="127.0.0.1:9",
        GCE_METADATA_IP="127.0.0.1:9",
    )
    assert res.returncode == 1
    assert (
        res.stderr.strip().splitlines()[-1]
        == f"cluster: error: {work}/terraform.tfvars: queued_provisioning excludes spot: h100-dws."
    )
    assert not any(" apply " in c for c in stubs.calls())


def test_cluster_builds_a_missing_watcher_image_before_installing_the_chart(stubs):
    _, tag = git_tag()
    res = stubs.run("cluster.sh", STUB_IMAGE_MISSING="1")
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    repo = "us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images"
    describe = index(
        calls, f"gcloud artifacts docker images describe {repo}/watcher:{tag} --project jobgen-test-project"
    )
    build = index(calls, f"gcloud builds submit {REPO} --project jobgen-test-project --config ")
    helm = index(calls, "helm upgrade --install retrain-watcher")
    assert describe < build < helm
    assert sum(c.startswith("gcloud builds submit") for c in calls) == 1, "only the watcher is built"


def test_cluster_can_refuse_to_build_the_watcher_image(stubs):
    res = stubs.run("cluster.sh", STUB_IMAGE_MISSING="1", BUILD_WATCHER_IMAGE="0")
    assert res.returncode == 1
    assert (
        res.stderr.strip()
        .splitlines()[-1]
        .endswith("is not in the registry: run 'make images' first (or unset BUILD_WATCHER_IMAGE)")
    )
    assert not any(c.startswith("helm upgrade") for c in stubs.calls())


def test_cluster_adopts_buckets_kept_by_destroy(stubs):
    """make destroy KEEP_BUCKETS=1 leaves buckets outside the state: the next
    make cluster imports them (adopt_existing_buckets) instead of a 409."""
    kept = " ".join(BUCKETS[p] for p in ("data", "models", "checkpoints", "watcher-state"))
    res = stubs.run(
        "cluster.sh", STUB_EXISTING_BUCKETS=kept, STUB_TF_STATE="module.bucket_data.google_storage_bucket.this"
    )
    assert res.returncode == 0, res.stderr
    calls = stubs.calls()
    apply = calls[index(calls, f"terraform -chdir={stubs.root}/terraform apply")]
    # data is in the state already; the others exist outside it; build does not exist.
    assert '-var=adopt_existing_buckets=["models","checkpoints","watcher-state"]' in apply, apply
    assert index(calls, "gcloud storage buckets describe gs://jobgen-test-project-jobgen-models") < index(
        calls, f"terraform -chdir={stubs.root}/terraform apply"
    )


def test_cluster_checks_gpu_quota_for_each_pool(stubs):
    res = stubs.run(
        "cluster.sh",
        STUB_TF_SETTINGS=settings([pool("t4", "nvidia-tesla-t4", ["us-central1-b"]), pool("l4", "nvidia-l4", [])]),
        STUB_ACCEL_ZONES="us-central1-b",
    )
    assert res.returncode == 0, res.stderr
    assert (
        "gcloud compute regions describe us-central1 --project jobgen-test-project --format=json(quotas)"
        in stubs.calls()
    )


def test_cluster_creates_the_cmek_service_agents(stubs):
    res = stubs.run(
        "cluster.sh",
        STUB_TF_SETTINGS=settings(kms=True, gke_kms=True),
        STUB_ENABLED_APIS=REQUIRED_APIS + " cloudkms.googleapis.com",
    )
    assert res.returncode == 0, res.stderr
    created = [
        c.split("--service=")[1].split()[0]
        for c in stubs.calls()
        if c.startswith("gcloud beta services identity create")
    ]
    assert created == ["pubsub.googleapis.com", "artifactregistry.googleapis.com", "container.googleapis.com"]


def test_images_use_the_build_service_account_staging_bucket_and_gcloudignore(stubs):
    res = stubs.run("images.sh", IMAGES="watcher")
    assert res.returncode == 0, res.stderr
    submit = next(c for c in stubs.calls() if c.startswith("gcloud builds submit"))
    assert (
        "--service-account "
        "projects/jobgen-test-project/serviceAccounts/jobgen-build@jobgen-test-project.iam.gserviceaccount.com"
        in submit
    )
    assert "--gcs-source-staging-dir gs://jobgen-test-project-jobgen-build/source" in submit
    assert f"--ignore-file {REPO}/.gcloudignore" in submit
    assert "logging: CLOUD_LOGGING_ONLY" in "\n".join(stubs.calls()), (
        "a user-chosen build service account needs a logging option"
    )


def test_destroy_keeps_the_watcher_state_bucket_too(stubs):
    res = stubs.run("destroy.sh", CONFIRM="jobgen", KEEP_BUCKETS="1")
    assert res.returncode == 0, res.stderr
    assert f"terraform -chdir={stubs.root}/terraform state rm module.bucket_watcher_state" in stubs.calls()


JOBGEN_RECORDER = r"""#!/usr/bin/env bash
echo "jobgen $*" >>"$STUB_LOG"
"""


@pytest.fixture
def submit_env(stubs, tmp_path: Path):
    jobgen = stubs.dir / "jobgen"
    jobgen.write_text(JOBGEN_RECORDER)
    jobgen.chmod(0o755)
    return {"JOBGEN": str(jobgen), "JOBGEN_PYTHON": sys.executable}


def test_submit_fills_the_projects_trainer_image_for_the_placeholder(stubs, submit_env):
    _, tag = git_tag()
    res = stubs.run("submit.sh", **submit_env, _args=[str(REPO / "jobs" / "cpu-ddp.yaml")])
    assert res.returncode == 0, res.stderr
    call = [c for c in stubs.calls() if c.startswith("jobgen ")]
    assert call == [
        f"jobgen submit {REPO}/jobs/cpu-ddp.yaml --set-string "
        f"image=us-central1-docker.pkg.dev/jobgen-test-project/jobgen-images/trainer:{tag}"
    ]


def test_submit_uses_tf_trainer_for_tfjobs_and_image_wins(stubs, submit_env):
    _, tag = git_tag()
    res = stubs.run("submit.sh", **submit_env, _args=[str(REPO / "jobs" / "tf-mwms.yaml")])
    assert res.returncode == 0, res.stderr
    assert f"/jobgen-images/tf-trainer:{tag}" in next(c for c in stubs.calls() if c.startswith("jobgen "))
    res = stubs.run(
        "submit.sh", **submit_env, IMAGE="registry.example/x:1", _args=[str(REPO / "jobs" / "cpu-ddp.yaml")]
    )
    assert res.returncode == 0, res.stderr
    assert [c for c in stubs.calls() if c.startswith("jobgen ")][-1].endswith("--set-string image=registry.example/x:1")


def test_submit_keeps_a_real_image(stubs, submit_env, tmp_path: Path):
    spec = tmp_path / "job.yaml"
    spec.write_text("kind: PyTorchJob\nname: x\nimage: europe-docker.pkg.dev/acme/ml/trainer:7\n")
    res = stubs.run("submit.sh", **submit_env, _args=[str(spec)])
    assert res.returncode == 0, res.stderr
    assert [c for c in stubs.calls() if c.startswith("jobgen ")] == [f"jobgen submit {spec}"]


def test_submit_without_a_registry_leaves_the_spec_alone(stubs, submit_env):
    stubs.remove("terraform")
    res = stubs.run("submit.sh", **submit_env, _args=[str(REPO / "jobs" / "cpu-ddp.yaml")])
    assert res.returncode == 0, res.stderr
    assert [c for c in stubs.calls() if c.startswith("jobgen ")] == [f"jobgen submit {REPO}/jobs/cpu-ddp.yaml"]


def test_submit_usage(stubs, submit_env):
    res = stubs.run("submit.sh", **submit_env)
    assert res.returncode == 2 and res.stderr.strip() == "usage: make submit JOB=jobs/x.yaml [IMAGE=registry/image:tag]"


def test_make_submit_goes_through_submit_sh():
    res = subprocess.run(
        ["make", "-n", "-C", str(REPO), "submit", "JOB=jobs/cpu-ddp.yaml"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stderr
    assert "JOBGEN=.venv/bin/jobgen hack/terraform/submit.sh jobs/cpu-ddp.yaml" in res.stdout, res.stdout


def test_cluster_binds_the_ci_deployer_in_the_namespace(stubs):
    res = stubs.run("cluster.sh", STUB_GITHUB="1")
    assert res.returncode == 0, res.stderr
    rb = (stubs.root / "terraform" / "generated" / "k8s" / "training" / "ci-deploy-rolebinding.yaml").read_text()
    assert "name: jobgen-ci-deploy@jobgen-test-project.iam.gserviceaccount.com" in rb and "name: admin" in rb
    res = stubs.run("cluster.sh")
    assert res.returncode == 0, res.stderr
    assert not (stubs.root / "terraform" / "generated" / "k8s" / "training" / "ci-deploy-rolebinding.yaml").exists()
