# Sourced by hack/images-local.sh: image names, the base's Debian suite and packages, the cache.
# shellcheck disable=SC2034 # the variables are used by the scripts that source this file
# The same image references are in jobgen/localcluster/realnode.py (IMAGES); keep them in step.
# shellcheck shell=bash
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
DEBIAN_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
images_cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}/images"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/containers.conf}"

say() { echo "images-local: $*" >&2; }
die() { echo "images-local: $*" >&2; exit 1; }

image_ref() { # image_ref NAME -> the local reference
  case "$1" in
    base) echo "localhost/jobgen/base:$BASE_SUITE" ;;
    pause) echo "localhost/jobgen/pause:3.10" ;;
    trainer|tf-trainer|watcher) echo "localhost/jobgen/$1:local" ;;
    *) die "unknown image '$1'" ;;
  esac
}

image_source() { # image_source NAME -> "context dockerfile" (relative to the repo root)
  case "$1" in
    trainer) echo "images/trainer images/trainer/Dockerfile" ;;
    tf-trainer) echo "images images/tf-trainer/Dockerfile" ;;
    watcher) echo ". images/watcher/Dockerfile" ;;
    *) die "unknown image '$1'" ;;
  esac
}
