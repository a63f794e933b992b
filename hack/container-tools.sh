#!/usr/bin/env bash
# Install the Debian packages the local image build and the real node need, when missing:
#   podman, buildah (build and run images without a Docker engine), debootstrap (base images
#   from Debian packages: no registry is reachable), runc (the OCI runtime containerd and podman
#   use), containernetworking-plugins (bridge, host-local, loopback, portmap for pod networking),
#   iptables + conntrack (kube-proxy and the CNI's masquerade/portmap rules), uidmap.
# Usage: hack/container-tools.sh [--check]   (--check: exit 1 listing what is missing, install nothing)
set -euo pipefail

pkgs=(podman buildah debootstrap runc containernetworking-plugins iptables conntrack uidmap fuse-overlayfs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ "${1:-}" == "--check" ]]; then
  echo "container-tools: missing Debian packages: ${missing[*]} (run hack/container-tools.sh)" >&2
  exit 1
fi
command -v apt-get >/dev/null 2>&1 || { echo "container-tools: apt-get not found; install ${missing[*]} with your package manager" >&2; exit 1; }
sudo=()
[[ $(id -u) -eq 0 ]] || sudo=(sudo)
echo "container-tools: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
