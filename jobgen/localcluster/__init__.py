"""A real Kubernetes control plane without Docker, for tests and local use.

etcd, kube-apiserver (TLS, service-account tokens, RBAC), kube-controller-manager,
kube-scheduler, the Kubeflow training-operator v1.9.4 and kwok-simulated GKE GPU
nodes, built from pinned sources by hack/build-bins.sh and run as tracked processes.

    python -m jobgen.localcluster up|down|status|env

Not imported by `import jobgen`.
"""

from .bins import Binaries, bin_dir, binaries, cache_dir, ensure_binaries
from .cluster import (
    EXIT_CODE_ANNOTATION,
    RUN_FOR_ANNOTATION,
    ClusterInfo,
    LocalCluster,
    default_state_dir,
)
from .errors import ClusterError
from .nodes import MAX_GPUS_PER_NODE, POOLS, Pool

__all__ = [
    "EXIT_CODE_ANNOTATION",
    "MAX_GPUS_PER_NODE",
    "POOLS",
    "RUN_FOR_ANNOTATION",
    "Binaries",
    "ClusterError",
    "ClusterInfo",
    "LocalCluster",
    "Pool",
    "bin_dir",
    "binaries",
    "cache_dir",
    "default_state_dir",
    "ensure_binaries",
]
