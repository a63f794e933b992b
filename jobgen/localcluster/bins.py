"""Pinned binaries of the local control plane: versions, cache paths, build."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import ClusterError

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-bins.sh"

# binary name -> key in hack/versions.env
BINARIES: dict[str, str] = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kwok": "KWOK_VERSION",
    "training-operator": "TRAINING_OPERATOR_VERSION",
    "helm": "HELM_VERSION",
    "kind": "KIND_VERSION",
    # the real node (up --real-node)
    "kubelet": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "containerd": "CONTAINERD_VERSION",
    "containerd-shim-runc-v2": "CONTAINERD_VERSION",
    "ctr": "CONTAINERD_VERSION",
    "coredns": "COREDNS_VERSION",
}
NODE_BINARIES = ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "coredns")
# What `up` needs; helm is built by `make bins` for the chart tests, kind by hack/kind/kind.sh.
CLUSTER_BINARIES = tuple(n for n in BINARIES if n not in ("helm", "kind", *NODE_BINARIES))


def cache_dir() -> Path:
    """${JOBGEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jobgen}, as in hack/build-bins.sh."""
    if os.environ.get("JOBGEN_CACHE"):
        return Path(os.environ["JOBGEN_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "jobgen"


def bin_dir() -> Path:
    return cache_dir() / "bin"


def read_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    if not path.is_file():
        raise ClusterError(f"{path} not found: run from a checkout of the jobgen repository")
    versions: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key.strip()] = value.strip().strip('"')  # bash's quoting of a value with spaces
    return versions


@dataclass(frozen=True)
class Binaries:
    """Absolute paths of the version-keyed binaries in the cache."""

    dir: Path
    versions: dict[str, str]

    def path(self, name: str) -> Path:
        return self.dir / f"{name}-{self.versions[BINARIES[name]]}"

    def missing(self, names: tuple[str, ...] = CLUSTER_BINARIES) -> list[str]:
        return [n for n in names if not os.access(self.path(n), os.X_OK)]


def binaries() -> Binaries:
    return Binaries(dir=bin_dir(), versions=read_versions())


def ensure_binaries(names: tuple[str, ...] = CLUSTER_BINARIES) -> Binaries:
    """Return the binaries, building the missing ones with hack/build-bins.sh."""
    bins = binaries()
    if not bins.missing(names):
        return bins
    if shutil.which("go") is None:
        raise ClusterError("go not found: install Go >= 1.26 to build the local control plane")
    groups = sorted({_group(n) for n in bins.missing(names)})
    proc = subprocess.run(["bash", str(BUILD_SCRIPT), *groups], check=False)
    if proc.returncode != 0:
        raise ClusterError(f"building {', '.join(groups)} failed (hack/build-bins.sh exit {proc.returncode})")
    still = bins.missing(names)
    if still:
        raise ClusterError(f"binaries still missing after the build: {', '.join(still)}")
    return bins


def _group(name: str) -> str:
    if name in ("kubelet", "kube-proxy"):
        return "node"
    key = BINARIES[name]
    return {
        "CONTAINERD_VERSION": "containerd",
        "COREDNS_VERSION": "coredns",
        "KUBERNETES_VERSION": "kubernetes",
        "ETCD_VERSION": "etcd",
        "KWOK_VERSION": "kwok",
        "TRAINING_OPERATOR_VERSION": "training-operator",
        "HELM_VERSION": "helm",
        "KIND_VERSION": "kind",
    }[key]
