# shellcheck shell=bash
# Shared by cluster.sh, images.sh and destroy.sh: prerequisite checks with
# one-line errors, and the Terraform invocation.

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tf_dir="${TF_DIR:-$repo/terraform}"
tf_vars="$(realpath -m "${TF_VARS_FILE:-$tf_dir/terraform.tfvars}")"
# shellcheck disable=SC2034 # used by the scripts that source this file
generated="$tf_dir/generated"

# APIs the platform uses; Terraform does not enable them (so destroy never
# disables an API other things in the project may use).
required_apis=(
  cloudresourcemanager.googleapis.com
  serviceusage.googleapis.com
  iam.googleapis.com
  iamcredentials.googleapis.com
  compute.googleapis.com
  container.googleapis.com
  storage.googleapis.com
  pubsub.googleapis.com
  artifactregistry.googleapis.com
  logging.googleapis.com
  monitoring.googleapis.com
)

die() { echo "${script_name:-terraform}: error: $*" >&2; exit 1; }
say() { echo "${script_name:-terraform}: $*" >&2; }

# need CMD HINT: fail unless CMD is on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found on PATH: $2"
}

need_terraform() {
  need terraform "install Terraform >= 1.9 (https://developer.hashicorp.com/terraform/install)"
  local v
  v="$(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([0-9.]*\)".*/\1/p' | head -n1)"
  [[ -n "$v" ]] || die "could not read the Terraform version from 'terraform version -json'"
  local major minor
  major="${v%%.*}"; minor="${v#*.}"; minor="${minor%%.*}"
  if (( major < 1 || (major == 1 && minor < 9) )); then
    die "Terraform >= 1.9 is needed, found $v"
  fi
}

need_gcloud() {
  need gcloud "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)"
  local account
  account="$(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null | head -n1)"
  [[ -n "$account" ]] || die "gcloud has no active account: run 'gcloud auth login'"
}

need_adc() {
  gcloud auth application-default print-access-token >/dev/null 2>&1 \
    || die "no Application Default Credentials for Terraform: run 'gcloud auth application-default login'"
}

need_tfvars() {
  [[ -f "$tf_vars" ]] || die "$tf_vars not found: copy terraform/terraform.tfvars.example (or one of terraform/examples/*.tfvars) to it and edit project_id"
}

# The project: $PROJECT, else project_id in terraform.tfvars, else gcloud's.
resolve_project() {
  local p="${PROJECT:-}"
  if [[ -z "$p" && -f "$tf_vars" ]]; then
    p="$(sed -n 's/^[[:space:]]*project_id[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$tf_vars" | head -n1)"
  fi
  if [[ -z "$p" ]]; then
    p="$(gcloud config get-value project 2>/dev/null || true)"
  fi
  [[ -n "$p" && "$p" != "(unset)" ]] || die "no GCP project set: set project_id in $tf_vars, PROJECT=..., or 'gcloud config set project ID'"
  [[ "$p" != "my-project-id" ]] || die "project_id in $tf_vars is still the example's 'my-project-id': set your project"
  gcloud projects describe "$p" --format='value(projectId)' >/dev/null 2>&1 \
    || die "project '$p' not found or not accessible to $(gcloud auth list --filter=status:ACTIVE --format='value(account)' 2>/dev/null | head -n1)"
  project="$p"
}

# Fail (or, with ENABLE_APIS=1, enable them) when required APIs are disabled.
check_apis() {
  local enabled missing=() api
  enabled="$(gcloud services list --enabled --project "$project" --format='value(config.name)' 2>/dev/null)" \
    || die "could not list the enabled APIs of $project (is serviceusage.googleapis.com enabled and may you list services?)"
  for api in "${required_apis[@]}" "$@"; do
    grep -qx "$api" <<<"$enabled" || missing+=("$api")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ "${ENABLE_APIS:-0}" == 1 ]]; then
    say "enabling ${missing[*]}"
    gcloud services enable "${missing[@]}" --project "$project" >&2 || die "enabling APIs failed"
  else
    die "required APIs are disabled in $project: ${missing[*]} (enable them: gcloud services enable ${missing[*]} --project $project, or rerun with ENABLE_APIS=1)"
  fi
}

# tf ARGS...: terraform in the root module. TF_PLUGIN_DIR uses a local
# provider mirror (hack/terraform/build-provider.sh) instead of the registry.
tf() {
  terraform -chdir="$tf_dir" "$@"
}

tf_init() {
  local args=(init -input=false)
  if [[ -n "${TF_PLUGIN_DIR:-}" ]]; then
    args+=("-plugin-dir=$TF_PLUGIN_DIR")
  fi
  if [[ -n "${TF_BACKEND_CONFIG:-}" ]]; then
    args+=("-backend-config=$TF_BACKEND_CONFIG")
  fi
  tf "${args[@]}" >&2 || die "terraform init failed (see above)"
}

var_args() {
  local args=("-var-file=$tf_vars")
  if [[ -n "${PROJECT:-}" ]]; then
    args+=("-var=project_id=$project")
  fi
  printf '%s\n' "${args[@]}"
}

tf_output() { # tf_output NAME: raw output value
  tf output -raw "$1" 2>/dev/null || die "terraform output $1 is missing: has 'make cluster' applied the configuration?"
}

# git_tag: the image tag for this checkout: 12 characters of the commit, plus
# "-dirty" when tracked files have uncommitted changes. Sets full_sha too.
git_tag() {
  full_sha="$(git -C "$repo" rev-parse HEAD 2>/dev/null)" || die "$repo is not a git checkout: cannot tag images with the git sha"
  local tag="${full_sha:0:12}"
  if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
    tag="$tag-dirty"
  fi
  echo "$tag"
}

# version_ge A B: true when dotted version A >= B (numeric parts only).
version_ge() {
  local IFS=.
  local -a a b
  read -r -a a <<<"${1%%[-+]*}"
  read -r -a b <<<"${2%%[-+]*}"
  local i
  for ((i = 0; i < ${#b[@]}; i++)); do
    local x="${a[i]:-0}" y="${b[i]:-0}"
    ((10#$x > 10#$y)) && return 0
    ((10#$x < 10#$y)) && return 1
  done
  return 0
}

# write_k8s_overlay DIR NAMESPACE TRAINER_KSA TRAINER_GSA [PODMONITORING [DEPLOYER]]: a kustomize overlay
# of manifests/ that installs the training-operator as vendored and
# manifests/training under the namespace and trainer KSA terraform was given
# (variables k8s_namespace, trainer_ksa), annotated for Workload Identity. The
# manifests keep the defaults (training, jobgen-trainer); kustomize renames
# the Namespace and the ServiceAccount and follows the RoleBinding subjects.
# PODMONITORING=true adds a PodMonitoring (Managed Prometheus) for the
# operator's /metrics (training_operator_jobs_*_total, read by dashboards/).
# DEPLOYER (the CI deploy service account's email) gets the "admin"
# ClusterRole in NAMESPACE only, so its helm upgrade may manage the chart's
# Role and RoleBinding there.
write_k8s_overlay() {
  local dir="$1" ns="$2" ksa="$3" gsa="$4" podmonitoring="${5:-false}" deployer="${6:-}"
  mkdir -p "$dir/training"
  local rel_op rel_tr
  rel_op="$(realpath -m --relative-to="$dir" "$repo/manifests/training-operator")"
  rel_tr="$(realpath -m --relative-to="$dir/training" "$repo/manifests/training")"
  cat >"$dir/kustomization.yaml" <<YAML
# Generated by make cluster (hack/terraform/lib.sh write_k8s_overlay); do not edit.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel_op
  - training
YAML
  if [[ "$podmonitoring" == true ]]; then
    echo "  - operator-podmonitoring.yaml" >>"$dir/kustomization.yaml"
    cat >"$dir/operator-podmonitoring.yaml" <<'YAML'
apiVersion: monitoring.googleapis.com/v1
kind: PodMonitoring
metadata:
  name: training-operator
  namespace: kubeflow
spec:
  selector:
    matchLabels:
      control-plane: kubeflow-training-operator
  endpoints:
    - port: 8080
      path: /metrics
      interval: 60s
YAML
  else
    rm -f "$dir/operator-podmonitoring.yaml"
  fi
  cat >"$dir/training/kustomization.yaml" <<YAML
# Generated by make cluster from terraform outputs k8s_namespace and trainer_ksa; do not edit.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $rel_tr${deployer:+
  - ci-deploy-rolebinding.yaml}
namespace: $ns
patches:
  - target: {kind: ServiceAccount, name: jobgen-trainer}
    patch: |-
      - op: replace
        path: /metadata/name
        value: $ksa
      - op: add
        path: /metadata/annotations
        value: {iam.gke.io/gcp-service-account: $gsa}
YAML
  if [[ -n "$deployer" ]]; then
    cat >"$dir/training/ci-deploy-rolebinding.yaml" <<YAML
# The CI deploy service account (terraform github.tf) may helm upgrade the watcher here.
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: jobgen-ci-deploy
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: admin
subjects:
  - apiGroup: rbac.authorization.k8s.io
    kind: User
    name: $deployer
YAML
  else
    rm -f "$dir/training/ci-deploy-rolebinding.yaml"
  fi
}
