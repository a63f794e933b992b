#!/usr/bin/env bash
# Build the project's images without a Docker engine (make images-local; docs/local-cluster.md):
#   localhost/jobgen/base:bookworm   Debian bookworm minbase + python3, python3-venv, ca-certificates
#                                    (debootstrap + podman import: no registry is reachable here)
#   localhost/jobgen/pause:3.10      the pods' sandbox image (hack/pause/pause.go, FROM scratch)
#   localhost/jobgen/trainer:local   images/trainer/Dockerfile      } buildah bud, each from the repo's
#   localhost/jobgen/tf-trainer:local images/tf-trainer/Dockerfile } own Dockerfile with only
#   localhost/jobgen/watcher:local   images/watcher/Dockerfile      } --build-arg BASE_IMAGE=<the base>
# Usage: hack/images-local.sh [--timings FILE] [base|pause|trainer|tf-trainer|watcher ...]  (default: all)
# Layers are cached (buildah --layers): a warm run with no change takes seconds, a source edit rebuilds
# only the package layer. pip inside a build trusts the machine's CA bundle (read-only bind mount,
# never copied into an image); its cache is the Dockerfile's build cache mount.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source-path=SCRIPTDIR source=images/lib.sh
source "$root/hack/images/lib.sh"

timings=""
if [[ "${1:-}" == "--timings" ]]; then timings="$2"; shift 2; fi
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(base pause watcher trainer tf-trainer)

"$root/hack/container-tools.sh"
mkdir -p "$images_cache"
exec 8>"$images_cache/.lock"
flock 8   # one image build at a time on this machine (they share podman's storage and the pip cache)

ca=/etc/ssl/certs/ca-certificates.crt
[[ -f "$ca" ]] || die "$ca not found: pip inside the build needs the machine's CA bundle"

record() { # record NAME SECONDS
  local size
  size="$(podman image inspect --format '{{.Size}}' "$(image_ref "$1")" 2>/dev/null || echo 0)"
  say "$1: $(image_ref "$1") built in ${2}s, $(( size / 1024 / 1024 )) MiB"
  [[ -z "$timings" ]] || printf '%s %s %s\n' "$1" "$2" "$size" >> "$timings"
}

build_base() {
  local ref rootfs tar t0
  ref="$(image_ref base)"
  if podman image exists "$ref"; then return 0; fi
  t0=$(date +%s)
  rootfs="$images_cache/rootfs-$BASE_SUITE"
  tar="$images_cache/base-$BASE_SUITE.tar"
  if [[ ! -f "$tar" ]]; then
    rm -rf "$rootfs"
    say "debootstrap $BASE_SUITE (minbase + $BASE_PACKAGES) into $rootfs"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$rootfs" "$DEBIAN_MIRROR" \
      > "$images_cache/debootstrap.log" 2>&1 || die "debootstrap failed: see $images_cache/debootstrap.log"
    # What a base image does not need: downloaded .debs, apt lists, docs, the machine's resolv.conf/hostname.
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
    : > "$rootfs/etc/resolv.conf"; : > "$rootfs/etc/hostname"
    tar --numeric-owner -C "$rootfs" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
    rm -rf "$rootfs"
  fi
  podman import --change 'CMD ["/bin/bash"]' "$tar" "$ref" >/dev/null
  record base $(( $(date +%s) - t0 ))
}

build_pause() {
  local ref t0 work ctr
  ref="$(image_ref pause)"
  if podman image exists "$ref"; then return 0; fi
  t0=$(date +%s)
  work="$(mktemp -d)"
  (cd "$root/hack/pause" && CGO_ENABLED=0 GOFLAGS='' go build -trimpath -ldflags='-s -w' -o "$work/pause" pause.go)
  ctr="$(buildah from scratch)"
  buildah copy "$ctr" "$work/pause" /pause >/dev/null
  buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
  buildah commit --quiet "$ctr" "$ref" >/dev/null
  buildah rm "$ctr" >/dev/null
  rm -rf "$work"
  record pause $(( $(date +%s) - t0 ))
}

build_image() { # build_image NAME
  local name="$1" context dockerfile ignore t0 args=()
  read -r context dockerfile < <(image_source "$name")
  ignore="$root/$dockerfile.dockerignore"
  [[ -f "$ignore" ]] || ignore="$root/$context/.dockerignore"
  case "$name" in
    tf-trainer) args+=(--build-arg TF_LOCK=requirements-cpu.lock) ;;
  esac
  t0=$(date +%s)
  say "buildah bud $dockerfile (context $context) -> $(image_ref "$name")"
  buildah bud --isolation chroot --network host --layers --quiet \
    --ignorefile "$ignore" -f "$root/$dockerfile" \
    --build-arg BASE_IMAGE="$(image_ref base)" "${args[@]}" \
    --build-arg IMAGE_REF="$(image_ref "$name")" \
    -v "$ca:$ca:ro" \
    -t "$(image_ref "$name")" "$root/$context" >/dev/null \
    || die "building $(image_ref "$name") from $dockerfile failed (see above)"
  record "$name" $(( $(date +%s) - t0 ))
}

for t in "${targets[@]}"; do
  case "$t" in
    base) build_base ;;
    pause) build_base >/dev/null; build_pause ;;
    trainer|tf-trainer|watcher) build_base; build_image "$t" ;;
    *) die "unknown image '$t' (base pause trainer tf-trainer watcher)" ;;
  esac
done
