#!/usr/bin/env bash
# Time `CI=true bash .ci/run` as on a machine that has never built anything (docs/benchmarks.md,
# "The whole CI run"): a fresh clone of this repository's HEAD, and every cache the project fills
# empty: HOME is a new directory (so ~/.cache/jobgen, Go's module and build caches and pip's cache
# start empty) and podman's storage is a new directory (so the images and the node's containerd
# store start empty). Machine-wide tools stay as installed: Go, Python, terraform, gcloud + Java and
# the Debian packages. Needs root for the real node, and ~40 GB free under DIR.
# Usage: hack/cold-ci.sh DIR    (DIR is wiped; the log is DIR/run.log)
set -euo pipefail
dir="${1:?usage: hack/cold-ci.sh DIR}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rm -rf "${dir:?}/home" "$dir/repo" "$dir/containers"
mkdir -p "$dir/home" "$dir/containers"
cat > "$dir/storage.conf" <<EOT
[storage]
driver = "overlay"
graphroot = "$dir/containers/storage"
runroot = "$dir/containers/run"
EOT
git clone -q "$repo" "$dir/repo"
cd "$dir/repo"
git log --oneline -1 | tee "$dir/run.log"
start=$(date +%s)
rc=0
env HOME="$dir/home" GOENV="$(go env GOENV)" CONTAINERS_STORAGE_CONF="$dir/storage.conf" CI=true \
  bash -c 'time bash .ci/run' >> "$dir/run.log" 2>&1 || rc=$?
echo "rc=$rc seconds=$(( $(date +%s) - start ))" | tee -a "$dir/run.log"
exit "$rc"
