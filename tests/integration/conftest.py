"""The `local_cluster` session fixture: a real control plane (etcd, kube-apiserver with RBAC,
controller-manager, scheduler, training-operator v1.9.4, kwok GPU nodes) for integration tests.

It builds the pinned binaries if they are missing (hack/build-bins.sh), starts the cluster in a
temporary state dir and stops exactly what it started. With CI=true a cluster that cannot start
fails the tests; elsewhere, a machine without Go skips them with the reason.
Set JOBGEN_LOCALCLUSTER_REUSE=1 to use (and leave running) the cluster of
`python -m jobgen.localcluster up` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobgen.localcluster import ClusterError, LocalCluster, default_state_dir
from jobgen.localcluster.bins import binaries
from jobgen.localcluster.pki import write_kubeconfig

IN_CI = os.environ.get("CI", "").lower() == "true"


@dataclass
class LocalClusterHandle:
    """What integration tests get from the `local_cluster` fixture."""

    cluster: LocalCluster
    kubeconfig: str  # admin kubeconfig (system:masters)
    context: str
    server: str
    bin_dir: str
    kubectl_path: str

    # --- kubectl -----------------------------------------------------------
    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                kubeconfig: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.kubectl_path, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def get(self, kind: str, name: str | None = None, namespace: str | None = None,
            selector: str | None = None) -> Any:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if namespace:
            args += ["-n", namespace]
        if selector:
            args += ["-l", selector]
        return json.loads(self.kubectl(*args).stdout)

    def apply(self, obj: dict[str, Any] | list[dict[str, Any]], *extra: str,
              kubeconfig: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        docs = obj if isinstance(obj, list) else [obj]
        return self.kubectl("apply", "--server-side", "--field-manager=jobgen-tests", *extra, "-f", "-",
                            input=yaml.safe_dump_all(docs), kubeconfig=kubeconfig, check=check)

    def create_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace whose default ServiceAccount exists (pods need it)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        wait_for(lambda: self.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
                 30, f"ServiceAccount default in {name}")
        return name

    # --- identities --------------------------------------------------------
    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> str:
        """A kubeconfig that authenticates as the ServiceAccount with a TokenRequest token."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration=1h").stdout.strip()
        ca = self.cluster.pki.ca_cert.read_bytes()
        write_kubeconfig(path, server=self.server, ca_pem=ca, context=self.context, user={"token": token})
        return str(path)

    # --- pod lifecycle hooks (kwok stages) -----------------------------------
    @staticmethod
    def pod_annotations(exit_code: int | None = None, run_for: str | None = None) -> dict[str, str]:
        """Pod-template annotations: every attempt exits with `exit_code` after `run_for` (e.g. "1h")."""
        return LocalCluster.pod_annotations(exit_code, run_for)

    def fail_replica(self, namespace: str, pod: str, exit_code: int, after: str = "0s") -> None:
        """Make this one live pod exit with `exit_code` (0 = succeed); a recreated pod runs normally."""
        self.cluster.fail_replica(namespace, pod, exit_code, after)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll until `check()` returns something truthy; return it. Fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


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
        if not reuse:
            cluster.down()
            leftover = [name for name, running in cluster.processes().items() if running]
            assert not leftover, f"processes still running after down: {leftover}"
