"""Real containers: the images built from the repo's Dockerfiles (hack/images-local.sh) and the
local cluster's real node (`up --real-node`: containerd, kubelet, kube-proxy, CoreDNS).

A step that cannot run here (no root, no Debian tools, a failed build) fails with its reason when
CI=true; elsewhere it skips with the reason. Nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobgen.localcluster import ClusterError, LocalCluster
from jobgen.localcluster.bins import binaries
from jobgen.localcluster.realnode import CONTAINERS_CONF, IMAGES
from jobgen.localcluster.testing import LocalClusterHandle

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
# Where the build records "<image> <seconds> <bytes>" lines (hack/images-local.sh --timings).
TIMINGS = Path(os.environ.get("JOBGEN_IMAGE_TIMINGS", "/tmp/jobgen-image-timings.txt"))


def unavailable(reason: str) -> None:
    """Fail in CI, skip elsewhere: never silently."""
    if IN_CI:
        pytest.fail(f"real containers unavailable in CI: {reason}", pytrace=False)
    pytest.skip(f"real containers unavailable: {reason}")


def podman(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def _can_run_containers() -> str | None:
    if os.geteuid() != 0:
        return "needs root (containerd, kubelet, buildah with chroot isolation)"
    if shutil.which("apt-get") is None and shutil.which("buildah") is None:
        return "buildah/podman/debootstrap missing and no apt-get to install them (hack/container-tools.sh)"
    return None


@pytest.fixture(scope="session")
def local_images() -> dict[str, str]:
    """Build (or reuse the cached layers of) every image: hack/images-local.sh. name -> ref."""
    reason = _can_run_containers()
    if reason:
        unavailable(reason)
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(REPO / "hack/images-local.sh"), "--timings", str(TIMINGS)],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"hack/images-local.sh failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    print(f"images ready in {time.monotonic() - t0:.0f}s")
    return dict(IMAGES)


@pytest.fixture(scope="package")
def real_cluster(
    local_images: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalClusterHandle]:
    """A local cluster with the real node, in a temporary state dir; down at the end of tests/containers
    (not of the session: the rest of the suite runs without its kubelet and pods), which must leave no
    process, mount, network namespace or bridge behind (checked: an error at teardown)."""
    if shutil.which("go") is None and binaries().missing(("kubelet", "containerd", "coredns")):
        unavailable("go not found: the node binaries are built with Go (hack/build-bins.sh node containerd coredns)")
    reuse = os.environ.get("JOBGEN_REALNODE_DIR")  # a running `up --real-node --state-dir DIR`: kept running
    cluster = LocalCluster(Path(reuse) if reuse else tmp_path_factory.mktemp("realnode"), context="jobgen-real")
    try:
        info = cluster.info() if reuse else cluster.up(timeout=900, real_node=True)
    except ClusterError as e:
        cluster.down()
        pytest.fail(f"the real node failed to start: {e}", pytrace=False)
    if info is None or not info.real_node:
        unavailable(f"JOBGEN_REALNODE_DIR={reuse} is not a running cluster with a real node")
    assert info is not None
    handle = LocalClusterHandle(
        cluster=cluster,
        kubeconfig=info.kubeconfig,
        context=info.context,
        server=info.server,
        bin_dir=info.bin_dir,
        kubectl_path=str(binaries().path("kubectl")),
    )
    node = cluster.node
    if reuse:
        yield handle
        return
    try:
        yield handle
    finally:
        cluster.down()
        leftover = [n for n, running in cluster.processes().items() if running] + node.leftovers()
        assert not leftover, f"left behind after down: {leftover}"
