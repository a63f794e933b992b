#!/usr/bin/env bash
# Build the pinned binaries of the local control plane with the Go toolchain
# and cache them, version-keyed, outside the repo:
#   ${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}/bin/<name>-<version>
#
# Usage: hack/build-bins.sh [--print-dir] [group...]
#   groups: kubernetes etcd kwok training-operator helm   (default: these five)
#           kind                                          (only on request: hack/kind/kind.sh)
#           node: kubelet kube-proxy (same throwaway module as kubernetes), containerd
#           (containerd, containerd-shim-runc-v2, ctr), coredns  (the real node: docs/local-cluster.md)
# A group whose binaries are all cached is skipped, so a warm run takes < 1 s.
# Concurrent runs (two test sessions, say) are serialized with flock.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=versions.env
source "$here/versions.env"

cache="${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}"
bindir="$cache/bin"
workroot="$cache/build"

if [[ "${1:-}" == "--print-dir" ]]; then
  echo "$bindir"
  exit 0
fi

die() { echo "build-bins: $*" >&2; exit 1; }

command -v go >/dev/null 2>&1 || die "go not found: install Go >= 1.26 to build the local control plane"
goversion="$(go env GOVERSION)"
case "$goversion" in
  go1.2[6-9]*|go1.[3-9][0-9]*) ;;
  *) die "Go >= 1.26 is needed to build the local control plane, found $goversion" ;;
esac

export CGO_ENABLED=0 GOFLAGS=-mod=mod
mkdir -p "$bindir" "$workroot"
if command -v flock >/dev/null 2>&1; then
  exec 9>"$workroot/.lock"
  flock 9
fi

k8s_minor="${KUBERNETES_VERSION#v1.}"          # 36.3
staging_version="v0.${k8s_minor}"              # v0.36.3
k8s_bins=(kube-apiserver kube-scheduler kube-controller-manager kubectl)
# The real node's binaries, built in the same throwaway module (a separate group so that a cache
# holding the control plane stays valid; the go build cache makes the second build incremental).
k8s_node_bins=(kubelet kube-proxy)
containerd_bins=(containerd containerd-shim-runc-v2 ctr)

have_all() { # have_all version name...
  local v="$1"; shift
  local n
  for n in "$@"; do [[ -x "$bindir/$n-$v" ]] || return 1; done
}

stamp() { date +%s; }
report() { echo "build-bins: $1 built in $(( $(stamp) - $2 ))s"; }

# Install one freshly built binary into the cache atomically.
put() { # put src name version
  install -m 0755 "$1" "$bindir/.$2-$3.tmp"
  mv -f "$bindir/.$2-$3.tmp" "$bindir/$2-$3"
}

build_kubernetes() { build_k8s_module "${k8s_bins[@]}"; }
build_kubernetes_node() { build_k8s_module "${k8s_node_bins[@]}"; }

build_k8s_module() { # build_k8s_module binary...
  local bins=("$@")
  have_all "$KUBERNETES_VERSION" "${bins[@]}" && return 0
  local t0 work gomod out
  t0=$(stamp)
  work="$workroot/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$work"
  # k8s.io/kubernetes replaces its staging modules with local paths, so it
  # cannot be built with `go install mod@version`. A throwaway module requires
  # it and replaces each staging module with its published v0.X.Y version,
  # read from the downloaded go.mod.
  gomod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
  [[ -f "$gomod" ]] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"
  {
    echo "module jobgen.local/kubernetes-bins"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    sed -n 's|^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*$|\t\1 => \1 '"$staging_version"'|p' "$gomod"
    echo ")"
  } > "$work/go.mod.new"
  if ! cmp -s "$work/go.mod.new" "$work/go.mod"; then
    mv "$work/go.mod.new" "$work/go.mod"
    rm -f "$work/go.sum"
  else
    rm -f "$work/go.mod.new"
  fi
  local ver="$KUBERNETES_VERSION" ldflags="-s -w"
  local major minor
  major="${ver#v}"; major="${major%%.*}"
  minor="${ver#v*.}"; minor="${minor%%.*}"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$ver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  out="$work/out"
  rm -rf "$out"; mkdir -p "$out"
  echo "build-bins: building ${bins[*]} $ver (one go build; cold takes a while)"
  local pkgs=()
  for pkg in "${bins[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$pkg"); done
  (cd "$work" && go build -trimpath -ldflags="$ldflags" -o "$out/" "${pkgs[@]}")
  for pkg in "${bins[@]}"; do put "$out/$pkg" "$pkg" "$ver"; done
  rm -rf "$out"
  report "${bins[*]}" "$t0"
}

build_etcd() {
  have_all "$ETCD_VERSION" etcd && return 0
  local t0 work
  t0=$(stamp)
  # go.etcd.io/etcd/server/v3 replaces its sibling modules with local paths:
  # build it from a throwaway module that requires it.
  work="$workroot/etcd-$ETCD_VERSION"
  mkdir -p "$work"
  printf 'module jobgen.local/etcd-bins\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$work/go.mod.new"
  if ! cmp -s "$work/go.mod.new" "$work/go.mod"; then mv "$work/go.mod.new" "$work/go.mod"; rm -f "$work/go.sum"; else rm -f "$work/go.mod.new"; fi
  echo "build-bins: building etcd $ETCD_VERSION"
  (cd "$work" && go build -trimpath -ldflags="-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3)
  put "$work/etcd" etcd "$ETCD_VERSION"
  rm -f "$work/etcd"
  report etcd "$t0"
}

go_install() { # go_install name version module/pkg
  local name="$1" ver="$2" pkg="$3" t0 gobin
  have_all "$ver" "$name" && return 0
  t0=$(stamp)
  gobin="$workroot/gobin-$name-$ver"
  rm -rf "$gobin"; mkdir -p "$gobin"
  echo "build-bins: building $name $ver"
  GOBIN="$gobin" GOFLAGS='' go install -trimpath -ldflags="-s -w ${4:-}" "$pkg@$ver"
  put "$gobin/$(basename "$pkg")" "$name" "$ver"
  rm -rf "$gobin"
  report "$name" "$t0"
}

build_kwok() {
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
}
build_training_operator() {
  go_install training-operator "$TRAINING_OPERATOR_VERSION" github.com/kubeflow/training-operator/cmd/training-operator.v1
}
build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}
build_kind() {
  go_install kind "$KIND_VERSION" sigs.k8s.io/kind
}
build_containerd() {
  have_all "$CONTAINERD_VERSION" "${containerd_bins[@]}" && return 0
  local t0 gobin mod=github.com/containerd/containerd/v2 pkgs=() n
  t0=$(stamp)
  gobin="$workroot/gobin-containerd-$CONTAINERD_VERSION"
  rm -rf "$gobin"; mkdir -p "$gobin"
  for n in "${containerd_bins[@]}"; do pkgs+=("$mod/cmd/$n@$CONTAINERD_VERSION"); done
  echo "build-bins: building ${containerd_bins[*]} $CONTAINERD_VERSION"
  # CGO_ENABLED=0: static binaries without the btrfs snapshotter (overlayfs is used).
  GOBIN="$gobin" GOFLAGS='' go install -trimpath \
    -ldflags="-s -w -X $mod/version.Version=$CONTAINERD_VERSION -X $mod/version.Revision=$CONTAINERD_VERSION" "${pkgs[@]}"
  for n in "${containerd_bins[@]}"; do put "$gobin/$n" "$n" "$CONTAINERD_VERSION"; done
  rm -rf "$gobin"
  report containerd "$t0"
}
build_coredns() {
  have_all "$COREDNS_VERSION" coredns && return 0
  # Not `go install github.com/coredns/coredns`: its main links every plugin (the cloud DNS SDKs,
  # tracing), 3-4x the build time. A throwaway module whose main imports coremain and only the
  # plugins in COREDNS_PLUGINS (hack/versions.env), at CoreDNS's own dependency versions.
  local t0 work p
  t0=$(stamp)
  work="$workroot/coredns-$COREDNS_VERSION"
  mkdir -p "$work"
  {
    printf '// Generated by hack/build-bins.sh: CoreDNS with the plugins in COREDNS_PLUGINS.\npackage main\n\nimport (\n'
    printf '\t"github.com/coredns/coredns/coremain"\n\n'
    for p in $COREDNS_PLUGINS; do printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"; done
    printf ')\n\nfunc main() { coremain.Run() }\n'
  } > "$work/main.go"
  printf 'module jobgen.local/coredns-bins\n\ngo 1.26.0\n\nrequire github.com/coredns/coredns %s\n' "$COREDNS_VERSION" > "$work/go.mod.new"
  if ! cmp -s "$work/go.mod.new" "$work/go.mod"; then mv "$work/go.mod.new" "$work/go.mod"; rm -f "$work/go.sum"; else rm -f "$work/go.mod.new"; fi
  echo "build-bins: building coredns $COREDNS_VERSION (plugins: $COREDNS_PLUGINS)"
  (cd "$work" && go build -trimpath -ldflags="-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" -o "$work/coredns" .)
  put "$work/coredns" coredns "$COREDNS_VERSION"
  rm -f "$work/coredns"
  report coredns "$t0"
}

groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(kubernetes etcd kwok training-operator helm)
# Say up front what a cold build costs (measured: docs/benchmarks.md).
declare -A group_bins=([kubernetes]="$KUBERNETES_VERSION ${k8s_bins[*]}" [etcd]="$ETCD_VERSION etcd"
  [kwok]="$KWOK_VERSION kwok" [training-operator]="$TRAINING_OPERATOR_VERSION training-operator"
  [helm]="$HELM_VERSION helm" [kind]="${KIND_VERSION:-} kind"
  [node]="$KUBERNETES_VERSION ${k8s_node_bins[*]}" [containerd]="$CONTAINERD_VERSION ${containerd_bins[*]}"
  [coredns]="$COREDNS_VERSION coredns")
declare -A group_minutes=([kubernetes]=5 [etcd]=1 [kwok]=1 [training-operator]=2 [helm]=2 [kind]=1
  [node]=3 [containerd]=3 [coredns]=2)
todo=() minutes=0
for g in "${groups[@]}"; do
  # shellcheck disable=SC2086 # the version and binary names are meant to split
  if [[ -n "${group_bins[$g]:-}" ]] && ! have_all ${group_bins[$g]}; then
    todo+=("$g"); minutes=$(( minutes + group_minutes[$g] ))
  fi
done
if [[ ${#todo[@]} -gt 0 ]]; then
  echo "build-bins: first run on this machine: building ${todo[*]} from source with Go into $bindir"
  echo "build-bins: this takes roughly ${minutes}-$(( minutes * 2 )) minutes on 2 cores, once; later runs reuse the cache"
fi
t_all=$(stamp)
for g in "${groups[@]}"; do
  case "$g" in
    kubernetes) build_kubernetes ;;
    etcd) build_etcd ;;
    kwok) build_kwok ;;
    training-operator) build_training_operator ;;
    helm) build_helm ;;
    kind) build_kind ;;
    node) build_kubernetes_node ;;
    containerd) build_containerd ;;
    coredns) build_coredns ;;
    *) die "unknown group '$g' (kubernetes etcd kwok training-operator helm kind node containerd coredns)" ;;
  esac
done
echo "build-bins: binaries ready in $bindir ($(( $(stamp) - t_all ))s)"
