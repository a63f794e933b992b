# shellcheck shell=bash disable=SC2154,SC2034
# (vars, tf_vars and project are set by lib.sh and cluster.sh, which read adopt_buckets and settings_json.)
# Pre-flight of make cluster (sourced by cluster.sh after lib.sh): everything
# that would otherwise fail in the middle of `terraform apply` or after it,
# checked up front. Each failure is one line saying what to run.
#
#   preflight_tools      terraform >= 1.9, helm >= 3.8, kubectl, gke-gcloud-auth-plugin
#   preflight_settings   reads the settings below from the tfvars through `terraform console`
#   preflight_apis       core APIs plus those the settings need (image streaming, Cloud Build, WIF)
#   preflight_gpus       zones offer each pool's GPU; regional GPU quota fits one node of each pool
#   preflight_agents     the service agents that get IAM grants exist (created if missing)
#   preflight_buckets    buckets that exist outside the state (KEEP_BUCKETS=1) -> adopted, not re-created
#
# Sets: settings_json, adopt_buckets (a terraform list literal).

min_helm=3.8.0

preflight_tools() {
  need_terraform
  need kubectl "install kubectl (gcloud components install kubectl, or your package manager)"
  need helm "install Helm 3 (https://helm.sh/docs/intro/install/)"
  local hv
  hv="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
  hv="${hv#v}"
  [[ -n "$hv" ]] || die "could not read the Helm version ('helm version' failed): install Helm >= $min_helm"
  version_ge "$hv" "$min_helm" && [[ "${hv%%.*}" == 3 ]] \
    || die "Helm 3 >= $min_helm is needed, found $hv: install it (https://helm.sh/docs/intro/install/)"
  need gke-gcloud-auth-plugin "kubectl needs it to log in to GKE: run 'gcloud components install gke-gcloud-auth-plugin' (or apt-get install google-cloud-cli-gke-gcloud-auth-plugin)"
}

# One `terraform console` evaluation of what the checks need (variables and
# locals that need no API call).
preflight_settings() {
  local expr out err
  expr='jsonencode({
  region = var.region,
  image_streaming = var.enable_image_streaming,
  cloud_build = var.enable_cloud_build,
  github = var.github_repository != null,
  kms = var.kms_key_name != null,
  gke_kms = var.database_encryption_key != null,
  buckets = local.bucket_names,
  pools = [for p in var.gpu_pools : {
    name = p.name, type = p.accelerator_type, count = p.accelerator_count, max_nodes = p.max_nodes,
    preemptible = p.spot || p.queued_provisioning || p.flex_start, zones = p.zones == null ? [] : p.zones
  }]
})'
  expr="$(tr '\n' ' ' <<<"$expr")" # terraform console reads one expression per line
  err="$(mktemp)"
  out="$(tf console -no-color "${vars[@]}" <<<"$expr" 2>"$err")" || {
    local first
    first="$(grep -m1 '^Error: ' "$err" || true)"
    rm -f "$err"
    die "terraform could not read $tf_vars: ${first:-run terraform -chdir=terraform validate}"
  }
  # A variable that fails its validation is reported on stderr, exit code 0:
  # say the validation's own message.
  if grep -q '^Error: ' "$err"; then
    local msg
    msg="$(python3 -c 'import sys
lines = open(sys.argv[1]).read().splitlines()
msg = [l.strip() for l in lines if l.strip() and not l.startswith(("Error:", "  on ", "Warning:")) and not l.lstrip()[:1].isdigit() and "│" not in l and "├" not in l and not l.startswith("This was checked")]
print(msg[0] if msg else next(l for l in lines if l.startswith("Error: ")))' "$err")"
    rm -f "$err"
    die "$tf_vars: $msg"
  fi
  rm -f "$err"
  settings_json="$(python3 -c 'import json,sys; print(json.dumps(json.loads(json.loads(sys.argv[1]))))' "$(tail -n 1 <<<"$out")" 2>/dev/null)" \
    || die "could not read the settings from terraform console output: $(tail -n 1 <<<"$out")"
}

# setting KEY: one top-level value of settings_json (true/false/strings).
setting() {
  python3 -c 'import json,sys; v = json.loads(sys.argv[1])[sys.argv[2]]; print(str(v).lower() if isinstance(v, bool) else v)' "$settings_json" "$1"
}

preflight_apis() {
  local extra=()
  [[ "$(setting image_streaming)" == true ]] && extra+=(containerfilesystem.googleapis.com)
  [[ "$(setting cloud_build)" == true ]] && extra+=(cloudbuild.googleapis.com)
  [[ "$(setting github)" == true ]] && extra+=(sts.googleapis.com)
  [[ "$(setting kms)" == true || "$(setting gke_kms)" == true ]] && extra+=(cloudkms.googleapis.com)
  check_apis "${extra[@]}"
}

# GPU quota metric of an accelerator type (regional quota), empty if unknown.
gpu_quota_metric() {
  case "$1" in
    nvidia-tesla-t4) echo NVIDIA_T4_GPUS ;;
    nvidia-l4) echo NVIDIA_L4_GPUS ;;
    nvidia-tesla-a100) echo NVIDIA_A100_GPUS ;;
    nvidia-a100-80gb) echo NVIDIA_A100_80GB_GPUS ;;
    nvidia-h100-80gb) echo NVIDIA_H100_GPUS ;;
    nvidia-h100-mega-80gb) echo NVIDIA_H100_MEGA_GPUS ;;
    nvidia-h200-141gb) echo NVIDIA_H200_GPUS ;;
    nvidia-tesla-v100) echo NVIDIA_V100_GPUS ;;
    nvidia-tesla-p100) echo NVIDIA_P100_GPUS ;;
    nvidia-tesla-p4) echo NVIDIA_P4_GPUS ;;
    *) echo "" ;;
  esac
}

preflight_gpus() {
  local region pools
  region="$(setting region)"
  pools="$(python3 -c 'import json,sys
for p in json.loads(sys.argv[1])["pools"]:
    print(p["name"], p["type"], p["count"], p["max_nodes"], str(p["preemptible"]).lower(), " ".join(p["zones"]), sep="\t")' "$settings_json")"
  [[ -n "$pools" ]] || return 0

  # Zones listed for GPU pools must offer the accelerator. Terraform checks
  # machine types with built-in GPUs itself; attached GPUs (N1) only gcloud sees.
  local pool type count max preemptible zones offered z
  while IFS=$'\t' read -r pool type count max preemptible zones; do
    [[ -n "$pool" && -n "$zones" ]] || continue
    offered="$(gcloud compute accelerator-types list --project "$project" --filter="name=$type" --format='value(zone.basename())' 2>/dev/null)" \
      || die "could not list accelerator types in $project"
    for z in $zones; do
      grep -qx "$z" <<<"$offered" || die "GPU pool $pool: zone $z does not offer $type (zones that do: ${offered//$'\n'/, })"
    done
  done <<<"$pools"

  # Regional GPU quota: at least one node of each pool must fit (GKE creates
  # nodes one by one; a pool that cannot get one GPU fails every job).
  local quotas
  quotas="$(gcloud compute regions describe "$region" --project "$project" --format='json(quotas)' 2>/dev/null)" \
    || die "could not read the quotas of region $region in $project: run 'gcloud compute regions describe $region --project $project'"
  while IFS=$'\t' read -r pool type count max preemptible zones; do
    [[ -n "$pool" ]] || continue
    local metric
    metric="$(gpu_quota_metric "$type")"
    if [[ -z "$metric" ]]; then
      say "GPU pool $pool: no known quota metric for $type; quota not checked"
      continue
    fi
    [[ "$preemptible" == true ]] && metric="PREEMPTIBLE_$metric"
    local verdict
    verdict="$(python3 -c 'import json,sys
q = {x["metric"]: x for x in json.loads(sys.argv[1]).get("quotas", [])}
m, need, most = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
if m not in q:
    print("missing")
else:
    free = q[m]["limit"] - q[m].get("usage", 0)
    print("ok" if free >= need else "short", int(q[m]["limit"]), int(q[m].get("usage", 0)), int(most))' \
      "$quotas" "$metric" "$count" "$((count * max))")"
    case "$verdict" in
      ok*) ;;
      missing) die "GPU pool $pool: region $region has no $metric quota: request it (https://console.cloud.google.com/iam-admin/quotas?project=$project, metric $metric, region $region)" ;;
      short*)
        read -r _ limit usage most <<<"$verdict"
        die "GPU pool $pool: quota $metric in $region is $limit with $usage in use, one node needs $count (max_nodes needs $most): request more (https://console.cloud.google.com/iam-admin/quotas?project=$project, metric $metric, region $region)" ;;
    esac
  done <<<"$pools"
}

# Service agents that get IAM grants must exist. Terraform creates them too
# (terraform_data.service_agent in apis.tf); checking here turns a mid-apply failure
# (missing permission, missing gcloud beta) into one line up front.
preflight_agents() {
  local services=(pubsub.googleapis.com)
  [[ "$(setting kms)" == true ]] && services+=(artifactregistry.googleapis.com)
  [[ "$(setting gke_kms)" == true ]] && services+=(container.googleapis.com)
  local s
  for s in "${services[@]}"; do
    gcloud beta services identity create --service="$s" --project "$project" --format='value(email)' >/dev/null 2>&1 \
      || die "the service agent of $s could not be created: run 'gcloud beta services identity create --service=$s --project $project' (needs gcloud's beta component and serviceusage.services.use)"
  done
}

# Buckets that exist but are not in the state (e.g. kept by make destroy
# KEEP_BUCKETS=1) are imported (variable adopt_existing_buckets) instead of
# created, which would fail with 409.
preflight_buckets() {
  local in_state
  in_state="$(tf state list 2>/dev/null || true)"
  local -a adopt=()
  local purpose name module
  while IFS=$'\t' read -r purpose name; do
    [[ -n "$purpose" ]] || continue
    case "$purpose" in
      data) module=module.bucket_data ;;
      models) module=module.bucket_models ;;
      checkpoints) module=module.bucket_checkpoints ;;
      watcher-state) module=module.bucket_watcher_state ;;
      build) module='module.bucket_build[0]' ;;
      *) continue ;;
    esac
    grep -qF "$module.google_storage_bucket.this" <<<"$in_state" && continue
    if gcloud storage buckets describe "gs://$name" --project "$project" --format='value(name)' >/dev/null 2>&1; then
      say "bucket gs://$name exists outside the Terraform state: adopting it (import)"
      adopt+=("\"$purpose\"")
    fi
  done < <(python3 -c 'import json,sys
for k, v in json.loads(sys.argv[1])["buckets"].items():
    print(k, v, sep="\t")' "$settings_json")
  adopt_buckets="[$(IFS=,; echo "${adopt[*]}")]"
}
