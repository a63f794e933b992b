#!/usr/bin/env bash
# Create or delete the kind cluster of hack/kind/config.yaml and install manifests/.
#   hack/kind/kind.sh up     create cluster "jobgen" (context kind-jobgen), apply manifests/,
#                            wait for the training-operator Deployment
#   hack/kind/kind.sh down   delete it
# Needs a running Docker engine. kind and kubectl come from PATH, else are built
# (pinned, hack/versions.env) by hack/build-bins.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$repo/hack/versions.env"
cluster=jobgen
context="kind-$cluster"

die() { echo "kind: $*" >&2; exit 1; }

bindir="$("$repo/hack/build-bins.sh" --print-dir)"
tool() { # tool name group version: path of a binary, from PATH or built
  local name="$1" group="$2" version="$3"
  if [[ -x "$bindir/$name-$version" ]]; then echo "$bindir/$name-$version"; return; fi
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
  "$repo/hack/build-bins.sh" "$group" >&2
  echo "$bindir/$name-$version"
}

command -v docker >/dev/null 2>&1 || die "docker not found: the kind path needs Docker (use 'make local-cluster' without it)"
docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info': start Docker (or use 'make local-cluster')"
kind="$(tool kind kind "$KIND_VERSION")"
kubectl="$(tool kubectl kubernetes "$KUBERNETES_VERSION")"

case "${1:-}" in
  up)
    if "$kind" get clusters 2>/dev/null | grep -qx "$cluster"; then
      echo "kind: cluster $cluster exists"
    else
      "$kind" create cluster --config "$here/config.yaml" --wait 120s
    fi
    "$kubectl" --context "$context" apply --server-side --force-conflicts -k "$repo/manifests"
    "$kubectl" --context "$context" -n kubeflow rollout status deployment/training-operator --timeout=300s
    echo "kind: cluster $cluster ready; kubectl context $context"
    ;;
  down)
    "$kind" delete cluster --name "$cluster"
    ;;
  *)
    die "usage: hack/kind/kind.sh up|down"
    ;;
esac
