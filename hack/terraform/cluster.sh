#!/usr/bin/env bash
# make cluster: a GCP project from empty to ready.
#   1. checks: gcloud (logged in, ADC), terraform >= 1.9, kubectl, helm, a
#      project, the required APIs, terraform.tfvars, GPU zones for listed zones
#   2. terraform init + apply (asks for approval unless AUTO_APPROVE=1)
#   3. gcloud container clusters get-credentials
#   4. make operator (training-operator, namespace, RBAC), then annotates the
#      trainer KSA for Workload Identity
#   5. the watcher image (git sha tag) built unless the registry has it, then
#      helm upgrade --install charts/retrain-watcher with the generated values
#   6. prints the next commands
#
# Environment: PROJECT, TF_VARS_FILE, AUTO_APPROVE=1, ENABLE_APIS=1,
# SKIP_WATCHER=1 (no chart install), WATCHER_CHART (chart dir),
# WATCHER_IMAGE_TAG (default: the git sha tag), BUILD_WATCHER_IMAGE=0 (fail
# instead of building a missing watcher image), TF_PLUGIN_DIR (local provider mirror),
# TF_BACKEND_CONFIG (a backend config file for remote state), MAKE.
set -euo pipefail
script_name=cluster
# shellcheck source=hack/terraform/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ------------------------------------------------------------ prerequisites --
need_gcloud
need_terraform
need kubectl "install kubectl (gcloud components install kubectl, or your package manager)"
need helm "install Helm 3 (https://helm.sh/docs/intro/install/)"
need_tfvars
resolve_project
need_adc
# shellcheck disable=SC2119 # no extra APIs beyond the required ones
check_apis

chart="${WATCHER_CHART:-$repo/charts/retrain-watcher}"
if [[ "${SKIP_WATCHER:-0}" != 1 && ! -f "$chart/Chart.yaml" ]]; then
  die "$chart/Chart.yaml not found: the watcher chart is needed (or rerun with SKIP_WATCHER=1 to install it later)"
fi

say "project $project, variables $tf_vars"
tf_init
mapfile -t vars < <(var_args)

# Zones listed for GPU pools must offer the accelerator. Terraform checks
# machine types with built-in GPUs itself; attached GPUs (N1) only gcloud sees.
console_err="$(mktemp)"
trap 'rm -f "$console_err"' EXIT
pools_out="$(tf console -no-color "${vars[@]}" <<<'jsonencode([for p in var.gpu_pools : { name = p.name, type = p.accelerator_type, zones = p.zones == null ? [] : p.zones }])' 2>"$console_err")" \
  || die "terraform could not read $tf_vars: $(grep -m1 '^Error: ' "$console_err" || echo 'run terraform -chdir=terraform validate')"
# A variable that fails its validation is reported on stderr, exit code 0:
# say the validation's own message.
if grep -q '^Error: ' "$console_err"; then
  die "$tf_vars: $(python3 -c 'import sys
lines = open(sys.argv[1]).read().splitlines()
msg = [l.strip() for l in lines if l.strip() and not l.startswith(("Error:", "  on ", "Warning:")) and not l.lstrip()[:1].isdigit() and "│" not in l and "├" not in l and not l.startswith("This was checked")]
print(msg[0] if msg else next(l for l in lines if l.startswith("Error: ")))' "$console_err")"
fi
pools_json="$(tail -n 1 <<<"$pools_out")"
pool_lines="$(python3 -c 'import json,sys
for p in json.loads(json.loads(sys.argv[1])):
    print(p["name"], p["type"], " ".join(p["zones"]), sep="\t")' "$pools_json")" \
  || die "could not read the GPU pools from terraform console output: $pools_json"
while IFS=$'\t' read -r pool type zones; do
  [[ -n "$pool" && -n "$zones" ]] || continue
  offered="$(gcloud compute accelerator-types list --project "$project" --filter="name=$type" --format='value(zone.basename())' 2>/dev/null)" \
    || die "could not list accelerator types in $project"
  for z in $zones; do
    grep -qx "$z" <<<"$offered" || die "GPU pool $pool: zone $z does not offer $type (zones that do: ${offered//$'\n'/, })"
  done
done <<<"$pool_lines"

# ------------------------------------------------------------------ apply ----
apply_args=(apply -input=false "${vars[@]}")
[[ "${AUTO_APPROVE:-0}" == 1 ]] && apply_args+=(-auto-approve)
tf "${apply_args[@]}" || die "terraform apply failed (see above); fix and rerun make cluster (it is idempotent)"

cluster_name="$(tf_output cluster_name)"
cluster_location="$(tf_output cluster_location)"

# ------------------------------------------------------------- kubeconfig ----
gcloud container clusters get-credentials "$cluster_name" --location "$cluster_location" --project "$project" >&2 \
  || die "get-credentials failed for $cluster_name in $cluster_location"
kubectl version --request-timeout=20s >/dev/null 2>&1 \
  || die "cannot reach the control plane of $cluster_name: is this machine's address in master_authorized_networks?"

# --------------------------------------------------------------- operator ----
"${MAKE:-make}" -C "$repo" operator || die "make operator failed (see above)"

trainer_ksa="$(tf output -json trainer_ksa 2>/dev/null)" || die "terraform output trainer_ksa is missing"
read -r trainer_name trainer_gsa < <(python3 -c 'import json,sys; k = json.loads(sys.argv[1]); print(k["name"], k["google_service_account"])' "$trainer_ksa") \
  || die "terraform output trainer_ksa is not what this script expects: $trainer_ksa"
namespace="$(tf_output k8s_namespace)"
kubectl get serviceaccount "$trainer_name" -n "$namespace" >/dev/null 2>&1 \
  || kubectl create serviceaccount "$trainer_name" -n "$namespace" >&2 \
  || die "could not create service account $namespace/$trainer_name"
kubectl annotate serviceaccount "$trainer_name" -n "$namespace" --overwrite \
  "iam.gke.io/gcp-service-account=$trainer_gsa" >&2 \
  || die "could not annotate $namespace/$trainer_name for Workload Identity"

# ---------------------------------------------------------------- watcher ----
mkdir -p "$generated"
values="$generated/watcher-values.yaml"
tf output -raw watcher_helm_values >"$values" || die "terraform output watcher_helm_values is missing"
if [[ "${SKIP_WATCHER:-0}" == 1 ]]; then
  say "SKIP_WATCHER=1: not installing the watcher; values are in $values"
else
  # The watcher's image, tagged with this checkout's git sha, must be in the
  # registry before the chart can start it: build it now if it is not
  # (BUILD_WATCHER_IMAGE=0 to refuse instead).
  repository="$(tf_output image_repository)"
  tag="${WATCHER_IMAGE_TAG:-$(git_tag)}"
  if ! gcloud artifacts docker images describe "$repository/watcher:$tag" --project "$project" >/dev/null 2>&1; then
    [[ "${BUILD_WATCHER_IMAGE:-1}" == 1 ]] \
      || die "$repository/watcher:$tag is not in the registry: run 'make images' first (or unset BUILD_WATCHER_IMAGE)"
    say "$repository/watcher:$tag is not in the registry yet: building it"
    IMAGES=watcher IMAGE_REPOSITORY="$repository" PROJECT="$project" bash "$repo/hack/terraform/images.sh" >/dev/null \
      || die "building the watcher image failed (see above)"
  fi
  helm upgrade --install retrain-watcher "$chart" --namespace "$namespace" \
    --values "$values" --set-string "image.tag=$tag" --wait --timeout 10m >&2 \
    || die "helm upgrade --install retrain-watcher failed (values: $values, image tag $tag)"
fi

# ------------------------------------------------------------------- next ----
data_bucket="$(tf_output data_bucket)"
cat <<MSG

Cluster $cluster_name ($cluster_location) is ready in $project.

Next:
  make images                                   # build and push the images, tagged with the git sha
  make submit JOB=jobs/cpu-ddp.yaml             # run a job (kubectl context: $(kubectl config current-context 2>/dev/null || echo "?"))
  make status                                   # follow jobs
  gcloud storage cp DATA gs://$data_bucket/$(tf output -raw data_notification_prefix)   # new data triggers retraining
  helm upgrade retrain-watcher charts/retrain-watcher -n $namespace --reuse-values --set-string image.tag=SHA   # after make images of a new commit
  make destroy                                  # remove everything (asks first)
MSG
