#!/usr/bin/env bash
# Build hashicorp/google from the Go module proxy into a local filesystem
# mirror, cached by version outside the repo, for `terraform init -plugin-dir`:
#
#   ${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}/terraform-providers/
#     registry.terraform.io/hashicorp/google/<version>/<os>_<arch>/terraform-provider-google_v<version>
#
# Usage: hack/terraform/build-provider.sh            build unless cached (warm: < 1 s)
#        hack/terraform/build-provider.sh --print-dir print the mirror directory
#        hack/terraform/build-provider.sh --check     exit 0 if cached, 1 if not (no build)
#
# No Terraform provider registry is needed: only the Go toolchain and the Go
# module proxy. Concurrent runs are serialized with flock.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/terraform/versions.env
source "$here/versions.env"

cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}"
mirror="$cache/terraform-providers"
work="$cache/build/terraform-provider-google-$TF_GOOGLE_PROVIDER_VERSION"

die() { echo "tf-provider: $*" >&2; exit 1; }

platform() {
  if command -v go >/dev/null 2>&1; then
    echo "$(go env GOOS)_$(go env GOARCH)"
  else
    local os arch
    os="$(uname -s | tr '[:upper:]' '[:lower:]')"
    case "$(uname -m)" in
      x86_64) arch=amd64 ;;
      aarch64|arm64) arch=arm64 ;;
      *) arch="$(uname -m)" ;;
    esac
    echo "${os}_${arch}"
  fi
}

v="$TF_GOOGLE_PROVIDER_VERSION"
dest="$mirror/registry.terraform.io/hashicorp/google/$v/$(platform)"
bin="$dest/terraform-provider-google_v$v"

case "${1:-}" in
  --print-dir) echo "$mirror"; exit 0 ;;
  --check) [[ -x "$bin" ]]; exit $? ;;
  "") ;;
  *) die "unknown argument '$1' (usage: build-provider.sh [--print-dir|--check])" ;;
esac

[[ -x "$bin" ]] && exit 0

command -v go >/dev/null 2>&1 || die "go not found: install Go >= 1.26 to build the google provider"
goversion="$(go env GOVERSION)"
case "$goversion" in
  go1.2[6-9]*|go1.[3-9][0-9]*) ;;
  *) die "Go >= 1.26 is needed to build the google provider $v, found $goversion" ;;
esac

mkdir -p "$work" "$dest"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$work/.lock"
  flock 9
  [[ -x "$bin" ]] && exit 0   # another run built it while we waited
fi

t0=$(date +%s)
echo "tf-provider: building hashicorp/google $v ($TF_GOOGLE_PROVIDER_MODULE@$TF_GOOGLE_PROVIDER_MODULE_VERSION); cold: about 8-12 min and 2.5 GB of Go caches on 2 cores" >&2
rm -rf "${work:?}/bin"
# `go install mod@version` builds the module as the main module, with its own
# go.sum, so every dependency is checked against it.
if ! CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN="$work/bin" go install -trimpath \
    -ldflags "-s -w -X $TF_GOOGLE_PROVIDER_MODULE/version.ProviderVersion=$v" \
    "$TF_GOOGLE_PROVIDER_MODULE@$TF_GOOGLE_PROVIDER_MODULE_VERSION" >"$work/build.log" 2>&1; then
  tail -n 20 "$work/build.log" >&2
  die "building $TF_GOOGLE_PROVIDER_MODULE@$TF_GOOGLE_PROVIDER_MODULE_VERSION failed (full log: $work/build.log)"
fi
install -m 0755 "$work/bin/terraform-provider-google" "$dest/.tmp-provider"
mv -f "$dest/.tmp-provider" "$bin"
rm -rf "${work:?}/bin"
secs=$(( $(date +%s) - t0 ))
echo "$secs" >"$work/build-seconds"
echo "tf-provider: hashicorp/google $v built in ${secs}s -> $bin" >&2
