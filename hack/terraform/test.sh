#!/usr/bin/env bash
# Offline checks of terraform/ (what `make tf-test` runs; tests/terraform runs
# the same steps one by one):
#   terraform fmt -check, init from the local provider mirror (no registry),
#   validate, terraform test with the mocked provider (tests/*.tftest.hcl),
#   and each example tfvars planned by tests/examples/<name>.tftest.hcl.
# Needs the provider built by hack/terraform/build-provider.sh (make tf-provider).
set -euo pipefail
script_name=tf-test
# shellcheck source=hack/terraform/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_terraform
here="$repo/hack/terraform"
mirror="$("$here/build-provider.sh" --print-dir)"
"$here/build-provider.sh" --check \
  || die "the google provider is not in $mirror: run 'make tf-provider' first (builds it from the Go module proxy, ~8 min cold on 2 cores)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# A copy, so init never writes .terraform/ into the work tree.
tar -C "$tf_dir" --exclude=.terraform --exclude=generated --exclude=terraform.tfvars --exclude='*.tfstate*' -cf - . | tar -C "$work" -xf -
: >"$work/.terraformrc"
export TF_CLI_CONFIG_FILE="$work/.terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

t() { terraform -chdir="$work" "$@"; }
t fmt -check -recursive -diff
t init -backend=false -input=false -plugin-dir="$mirror" >/dev/null
t validate
t test
for vars in "$work"/examples/*.tfvars; do
  name="$(basename "$vars" .tfvars)"
  [[ -f "$work/tests/examples/$name.tftest.hcl" ]] || die "examples/$name.tfvars has no tests/examples/$name.tftest.hcl"
  t test -test-directory=tests/examples -filter="tests/examples/$name.tftest.hcl" -var-file="examples/$name.tfvars"
done
t test -test-directory=tests/examples -filter=tests/examples/starter.tftest.hcl -var-file=terraform.tfvars.example
say "all Terraform checks passed"
