#!/usr/bin/env bash
# Run checkov from a version-keyed virtualenv outside the repo:
#   ${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}/checkov-<version>/
# created on first use with pip (PyPI). Arguments go to checkov; with none,
# it scans terraform/, charts/ and manifests/ with the repo's .checkov.yaml.
#
# Usage: hack/terraform/checkov.sh [--print-bin | --install | checkov args...]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=hack/terraform/versions.env
source "$here/versions.env"

cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}"
venv="$cache/checkov-$CHECKOV_VERSION"
bin="$venv/bin/checkov"

die() { echo "checkov: $*" >&2; exit 1; }

install() {
  [[ -x "$bin" && -f "$venv/.installed" ]] && return 0
  local python="${PYTHON:-python3}"
  command -v "$python" >/dev/null 2>&1 || die "$python not found: Python >= 3.9 is needed to install checkov"
  mkdir -p "$cache"
  exec 8>"$cache/.checkov-$CHECKOV_VERSION.lock"
  command -v flock >/dev/null 2>&1 && flock 8
  [[ -x "$bin" && -f "$venv/.installed" ]] && return 0
  rm -rf "$venv"
  local t0=$SECONDS
  "$python" -m venv "$venv" || die "could not create $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2 \
    || { rm -rf "$venv"; die "pip install checkov==$CHECKOV_VERSION failed"; }
  touch "$venv/.installed"
  echo "checkov: installed $CHECKOV_VERSION in $((SECONDS - t0))s -> $venv" >&2
}

case "${1:-}" in
  --print-bin) echo "$bin"; exit 0 ;;
  --install) install; exit 0 ;;
esac

install
cd "$repo"
if (($# == 0)); then
  dirs=()
  for d in terraform charts manifests; do
    [[ -d "$d" ]] && [[ -n "$(find "$d" -type f -print -quit)" ]] && dirs+=(-d "$d")
  done
  set -- --config-file .checkov.yaml "${dirs[@]}"
fi
# checkov renders charts with `helm`; use the pinned one hack/build-bins.sh
# builds when none is on PATH, so charts/ is never skipped silently.
if ! command -v helm >/dev/null 2>&1 && [[ -f "$repo/hack/versions.env" ]]; then
  helm_version="$(sed -n 's/^HELM_VERSION=//p' "$repo/hack/versions.env")"
  if [[ -x "$cache/bin/helm-$helm_version" ]]; then
    shim="$(mktemp -d)"
    ln -s "$cache/bin/helm-$helm_version" "$shim/helm"
    export PATH="$shim:$PATH"
  elif [[ -n "$(find "$repo/charts" -name Chart.yaml -print -quit 2>/dev/null)" ]]; then
    die "charts/ has a chart but helm is not on PATH: run 'make bins' (builds helm $helm_version) or install helm"
  fi
fi
export BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false
exec "$bin" "$@"
