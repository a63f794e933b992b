#!/usr/bin/env bash
# make destroy: remove everything `make cluster` created: the cluster, node
# pools, network, buckets WITH THEIR OBJECTS, registry WITH ITS IMAGES,
# topics, subscriptions and service accounts.
#
# Asks you to type the cluster name unless CONFIRM=<cluster name>.
# KEEP_BUCKETS=1 keeps the data, models, checkpoints and watcher-state buckets
# (they are removed from the Terraform state, not deleted); the next
# `make cluster` adopts them (variable adopt_existing_buckets) instead of
# failing with 409.
set -euo pipefail
script_name=destroy
# shellcheck source=hack/terraform/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_gcloud
need_terraform
need_tfvars
resolve_project
need_adc

tf_init
mapfile -t vars < <(var_args)

cluster_name="$(tf output -raw cluster_name 2>/dev/null || true)"
cluster_location="$(tf output -raw cluster_location 2>/dev/null || true)"
[[ -n "$cluster_name" ]] || die "no cluster in the Terraform state of $tf_dir: nothing to destroy (or the state lives elsewhere: TF_BACKEND_CONFIG)"

what="cluster $cluster_name, its node pools and network, the registry and its images, topics, subscriptions and service accounts"
if [[ "${KEEP_BUCKETS:-0}" == 1 ]]; then
  what="$what (the buckets are kept)"
else
  what="$what, and the data, models, checkpoints and watcher-state buckets WITH ALL OBJECTS"
fi
if [[ "${CONFIRM:-}" != "$cluster_name" ]]; then
  [[ -t 0 ]] || die "refusing to destroy without confirmation: rerun with CONFIRM=$cluster_name"
  echo "This deletes, in project $project: $what." >&2
  read -r -p "Type the cluster name ($cluster_name) to go on: " answer
  [[ "$answer" == "$cluster_name" ]] || die "not confirmed; nothing was deleted"
fi

if [[ "${KEEP_BUCKETS:-0}" == 1 ]]; then
  for b in module.bucket_data module.bucket_models module.bucket_checkpoints module.bucket_watcher_state; do
    tf state rm "$b" >&2 2>/dev/null || true
  done
fi

# deletion_protection and force_destroy live in the state: turn them off there
# first (no change to the cloud resources themselves), then destroy.
unprotect=(-var=deletion_protection=false -var=force_destroy_buckets=true)
targets=(-target=google_container_cluster.this)
if [[ "${KEEP_BUCKETS:-0}" != 1 ]]; then
  targets+=(-target=module.bucket_data -target=module.bucket_models -target=module.bucket_checkpoints -target=module.bucket_watcher_state)
fi
tf apply -input=false -auto-approve "${vars[@]}" "${unprotect[@]}" "${targets[@]}" >&2 \
  || die "could not turn off deletion protection (see above); nothing was deleted"
tf destroy -input=false -auto-approve "${vars[@]}" "${unprotect[@]}" >&2 \
  || die "terraform destroy failed (see above); rerun make destroy to finish"

rm -f "$generated/watcher-values.yaml"
if command -v kubectl >/dev/null 2>&1; then
  kubectl config delete-context "gke_${project}_${cluster_location}_${cluster_name}" >/dev/null 2>&1 || true
fi
say "destroyed: $what"
