"""The `local_cluster` session fixture: a real control plane (etcd, kube-apiserver with RBAC,
controller-manager, scheduler, training-operator v1.9.4, kwok GPU nodes) for integration tests.

It builds the pinned binaries if they are missing (hack/build-bins.sh), starts the cluster in a
temporary state dir and stops exactly what it started. With CI=true a cluster that cannot start
fails the tests; elsewhere, a machine without Go skips them with the reason.
Set JOBGEN_LOCALCLUSTER_REUSE=1 to use (and leave running) the cluster of
`python -m jobgen.localcluster up` instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from jobgen.localcluster import ClusterError, LocalCluster, default_state_dir
from jobgen.localcluster.bins import binaries
from jobgen.localcluster.testing import LocalClusterHandle

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"local cluster unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"local cluster unavailable: {reason}")


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalClusterHandle]:
    reuse = os.environ.get("JOBGEN_LOCALCLUSTER_REUSE") == "1"
    if reuse:
        cluster = LocalCluster(default_state_dir())
        if not cluster.is_up():
            _unavailable("JOBGEN_LOCALCLUSTER_REUSE=1 but `python -m jobgen.localcluster up` is not running")
    else:
        if binaries().missing() and shutil.which("go") is None:
            _unavailable("go not found: install Go >= 1.26 to build the local control plane")
        cluster = LocalCluster(tmp_path_factory.mktemp("localcluster"), context="jobgen-test")
    try:
        info = cluster.up() if not reuse else cluster.info()
    except ClusterError as e:
        pytest.fail(f"local cluster failed to start: {e}", pytrace=False)
    assert info is not None
    handle = LocalClusterHandle(
        cluster=cluster, kubeconfig=info.kubeconfig, context=info.context, server=info.server,
        bin_dir=info.bin_dir, kubectl_path=str(binaries().path("kubectl")),
    )
    try:
        yield handle
    finally:
        if reuse:
            handle.delete_created_namespaces()  # leave the shared cluster as we found it
        else:
            cluster.down()
            leftover = [name for name, running in cluster.processes().items() if running]
            assert not leftover, f"processes still running after down: {leftover}"
