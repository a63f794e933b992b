#!/usr/bin/env bash
# Lock the images' Python dependencies (with hashes) so that an image build is reproducible and its
# big dependency layer is cached until a lock changes:
#   images/trainer/requirements.lock        trainer pyproject (+ torch, vision extras) + kfp (requirements-image.in)
#   images/tf-trainer/requirements.lock     tf-trainer + trainer deps + tensorflow[and-cuda]  (GKE)
#   images/tf-trainer/requirements-cpu.lock tf-trainer + trainer deps + tensorflow-cpu        (local)
#   images/watcher/requirements.lock        jobgen[watcher]
# Resolved once for every platform and Python >= 3.11 (uv --universal), so the same lock installs on
# the local Debian base (Python 3.11) and on the GKE CUDA base (Ubuntu 24.04, Python 3.12).
# uv is installed into <cache>/tools/uv on first use. Usage: hack/lock-images.sh [--check]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}"
uvenv="$cache/tools/uv"
[[ -x "$uvenv/bin/uv" ]] || { python3 -m venv "$uvenv" && "$uvenv/bin/pip" install --quiet "uv==0.13.9"; }
uv="$uvenv/bin/uv"
check=0; [[ "${1:-}" == "--check" ]] && check=1
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT

lock() { # lock OUT INPUT... [-- uv args]
  local out="$1"; shift
  local args=(pip compile --quiet --universal --python-version 3.11 --generate-hashes --no-header
              --custom-compile-command "hack/lock-images.sh" "$@")
  # Start from the committed lock: its pins are kept unless the inputs need others (no upgrades).
  if [[ -f "$root/$out" ]]; then tail -n +2 "$root/$out" > "$tmp/lock"; else rm -f "$tmp/lock"; fi
  (cd "$root" && "$uv" "${args[@]}" -o "$tmp/lock") || { echo "lock-images: resolving $out failed" >&2; exit 1; }
  { echo "# Locked by hack/lock-images.sh (uv pip compile --universal --generate-hashes); do not edit."; cat "$tmp/lock"; } > "$tmp/out"
  if [[ $check -eq 1 ]]; then
    cmp -s "$tmp/out" "$root/$out" || { echo "lock-images: $out is out of date: run hack/lock-images.sh" >&2; exit 1; }
  else
    mv "$tmp/out" "$root/$out"; echo "lock-images: wrote $out"
  fi
}

lock images/trainer/requirements.lock images/trainer/pyproject.toml images/trainer/requirements-image.in \
  --extra torch --extra vision --no-emit-package jobgen-trainer
for variant in cuda cpu; do
  out=images/tf-trainer/requirements.lock; [[ $variant == cpu ]] && out=images/tf-trainer/requirements-cpu.lock
  lock "$out" images/tf-trainer/pyproject.toml images/tf-trainer/requirements-image.in "images/tf-trainer/requirements-$variant.in" \
    --no-emit-package jobgen-trainer --no-emit-package jobgen-tf-trainer
done
lock images/watcher/requirements.lock pyproject.toml images/watcher/requirements-image.in --extra watcher --no-emit-package jobgen
