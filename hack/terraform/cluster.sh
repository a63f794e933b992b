#!/usr/bin/env bash
# make cluster: a GCP project from empty to ready.
#   1. pre-flight (hack/terraform/preflight.sh), each failure one line saying
#      what to run: tools and their versions, gcloud (logged in, ADC), a
#      project, terraform.tfvars and its validations, the APIs the settings
#      need, GPU zones and regional GPU quota, the service agents, buckets that
#      exist outside the state (adopted instead of re-created)
#   2. terraform init + apply (asks for approval unless AUTO_APPROVE=1)
#   3. gcloud container clusters get-credentials
#   4. the training-operator and manifests/training, under the namespace and
#      trainer KSA terraform was given (a generated kustomize overlay), the
#      KSA annotated for Workload Identity
#   5. the watcher image (git sha tag) built unless the registry has it, then
#      helm upgrade --install charts/retrain-watcher with the generated values,
#      the watcher image and the job's trainer image at that tag
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

# ------------------------------------------------------------- pre-flight --
# shellcheck source=hack/terraform/preflight.sh
source "$(dirname "${BASH_SOURCE[0]}")/preflight.sh"
need_gcloud
preflight_tools
need_tfvars
resolve_project
need_adc
# The APIs terraform itself needs to read the project, before init.
# shellcheck disable=SC2119 # no extra APIs beyond the required ones
check_apis

chart="${WATCHER_CHART:-$repo/charts/retrain-watcher}"
if [[ "${SKIP_WATCHER:-0}" != 1 && ! -f "$chart/Chart.yaml" ]]; then
  die "$chart/Chart.yaml not found: the watcher chart is needed (or rerun with SKIP_WATCHER=1 to install it later)"
fi

say "project $project, variables $tf_vars"
tf_init
mapfile -t vars < <(var_args)
preflight_settings
preflight_apis
preflight_gpus
preflight_agents
preflight_buckets

# ------------------------------------------------------------------ apply ----
apply_args=(apply -input=false "${vars[@]}")
[[ "$adopt_buckets" != "[]" ]] && apply_args+=("-var=adopt_existing_buckets=$adopt_buckets")
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
trainer_ksa="$(tf output -json trainer_ksa 2>/dev/null)" || die "terraform output trainer_ksa is missing"
read -r namespace trainer_name trainer_gsa < <(python3 -c 'import json,sys; k = json.loads(sys.argv[1]); print(k["namespace"], k["name"], k["google_service_account"])' "$trainer_ksa") \
  || die "terraform output trainer_ksa is not what this script expects: $trainer_ksa"
overlay="$generated/k8s"
deployer="$(tf output -json github_service_accounts 2>/dev/null | python3 -c 'import json,sys
try:
    print((json.load(sys.stdin) or {}).get("deploy") or "")
except ValueError:
    print("")' || true)"
write_k8s_overlay "$overlay" "$namespace" "$trainer_name" "$trainer_gsa" \
  "$(tf output -raw managed_prometheus 2>/dev/null || echo false)" "$deployer"
kubectl apply --server-side -k "$overlay" >&2 \
  || die "installing the training-operator and $namespace/$trainer_name failed (kubectl apply --server-side -k $overlay)"

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
  # The watcher's job runs the trainer built from the same commit: make images
  # pushes it (until then its pods wait in ImagePullBackOff, not on a placeholder).
  if ! gcloud artifacts docker images describe "$repository/trainer:$tag" --project "$project" >/dev/null 2>&1; then
    say "$repository/trainer:$tag is not in the registry yet: run 'make images' before uploading data"
  fi
  helm upgrade --install retrain-watcher "$chart" --namespace "$namespace" \
    --values "$values" --set-string "image.tag=$tag" --set-string "jobs.train.image=$repository/trainer:$tag" \
    --wait --timeout 10m >&2 \
    || die "helm upgrade --install retrain-watcher failed (values: $values, image tag $tag)"
fi

# ------------------------------------------------------------------- next ----
data_bucket="$(tf_output data_bucket)"
cat <<MSG

Cluster $cluster_name ($cluster_location) is ready in $project.

Next:
  make images                                   # build and push the images, tagged with the git sha
  make submit JOB=jobs/cpu-ddp.yaml             # run a job with $(tf_output image_repository)/trainer:<git sha> (kubectl context: $(kubectl config current-context 2>/dev/null || echo "?"))
  make status                                   # follow jobs
  gcloud storage cp DATA gs://$data_bucket/$(tf output -raw data_notification_prefix)   # new data triggers retraining
  helm upgrade retrain-watcher charts/retrain-watcher -n $namespace --reuse-values --set-string image.tag=SHA --set-string jobs.train.image=$(tf_output image_repository)/trainer:SHA   # after make images of a new commit (CI does this on merge)
  make destroy                                  # remove everything (asks first)
MSG
