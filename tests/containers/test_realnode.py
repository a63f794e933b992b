"""The real node: kubelet v1.36 + containerd 2.x running pods as containers, with the cluster's
networking (kube-proxy for the kubernetes Service, CoreDNS), PodSecurity `restricted` on the training
namespace, and no image pull that can leave the machine."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobgen.localcluster import ClusterError
from jobgen.localcluster.bins import binaries, read_versions
from jobgen.localcluster.realnode import IMAGES, NODE_IP, NODE_NAME, TRAINING_NAMESPACE
from jobgen.localcluster.testing import LocalClusterHandle, wait_for

RESTRICTED_POD = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
}


def pod(name: str, image: str, command: list[str], *, restricted: bool = True) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "command": command,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "terminationGracePeriodSeconds": 2}
    if restricted:
        spec["securityContext"] = RESTRICTED_POD
        container["securityContext"] = RESTRICTED_CONTAINER
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": TRAINING_NAMESPACE},
        "spec": spec,
    }


def phase(cluster: LocalClusterHandle, name: str) -> str:
    out = cluster.kubectl("get", "pod", name, "-n", TRAINING_NAMESPACE, "-o", "jsonpath={.status.phase}", check=False)
    return out.stdout.strip()


def waiting_reason(cluster: LocalClusterHandle, name: str) -> str:
    p = cluster.get("pod", name, TRAINING_NAMESPACE)
    for st in p.get("status", {}).get("containerStatuses") or []:
        waiting = st.get("state", {}).get("waiting")
        if waiting:
            return f"{waiting.get('reason')}: {waiting.get('message', '')}"
    return ""


@pytest.fixture
def host_listener() -> Iterator[tuple[int, list[bytes]]]:
    """A TCP server on the node address (where pods reach the host), recording what it receives."""
    got: list[bytes] = []
    srv = socket.create_server((NODE_IP, 0))
    srv.settimeout(0.5)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                got.append(conn.recv(100))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], got
    stop.set()
    t.join(5)
    srv.close()


def test_a_real_node_left_by_a_killed_run_is_cleaned_up_and_a_live_one_is_not(tmp_path):
    """Runs before this package's node starts: its host state (owner file, bridge) is ours to fake."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from jobgen.localcluster import realnode
    from tests.containers.conftest import unavailable

    if realnode._read(realnode.RUN_DIR / "owner") or realnode._link_exists(realnode.BRIDGE):
        unavailable(f"a real node runs on this machine ({realnode.RUN_DIR}/owner)")
    if os.geteuid() != 0:
        unavailable("needs root (a bridge)")
    gone = tmp_path / "killed-run"  # its state dir was deleted with the temp dir it lived in
    me = realnode.RealNode(tmp_path / "next-run", log=lambda _m: None)

    def fake_leftover(owner) -> None:
        realnode.RUN_DIR.mkdir(parents=True, exist_ok=True)
        (realnode.RUN_DIR / "owner").write_text(f"{owner}\n")
        subprocess.run(["ip", "link", "add", realnode.BRIDGE, "type", "bridge"], check=True)

    try:
        fake_leftover(gone)
        # a process of that node still runs (its state dir in its arguments, as etcd's and the kubelet's
        # are). The interpreter itself, not a `python3` shim: a chain of execs shows an empty
        # /proc/<pid>/cmdline for an instant at each exec.
        live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(gone)])
        wait_for(lambda: str(gone).encode() in Path(f"/proc/{live.pid}/cmdline").read_bytes(), 10, "the process")
        try:
            assert me.reclaim_stale(str(gone), binaries()) is False
            assert realnode._link_exists(realnode.BRIDGE)
        finally:
            live.kill()
            live.wait()
        assert me.reclaim_stale(str(gone), binaries()) is True
        assert not realnode._link_exists(realnode.BRIDGE)
        assert not realnode.RUN_DIR.exists()
    finally:
        if realnode._link_exists(realnode.BRIDGE):
            subprocess.run(["ip", "link", "del", realnode.BRIDGE], check=False)
        subprocess.run(["rm", "-rf", str(realnode.RUN_DIR)], check=False)


def test_the_node_is_ready_with_kubelet_and_containerd_versions(real_cluster):
    node = real_cluster.get("node", NODE_NAME)
    versions = read_versions()
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions["KUBERNETES_VERSION"]
    assert info["containerRuntimeVersion"] == f"containerd://{versions['CONTAINERD_VERSION'].lstrip('v')}"
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", ready
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == NODE_IP


def test_the_images_are_in_containerds_k8s_namespace(real_cluster):
    have = real_cluster.cluster.node.containerd_images(binaries())
    for ref in IMAGES.values():
        assert ref in have, f"{ref} not imported: {sorted(have)}"


def test_a_reimported_image_leaves_no_old_version_behind(real_cluster, tmp_path):
    """containerd's CRI plugin also records each image under its ID; when a tag moves to a new
    build, that record kept the old layers for good (14 GB here after two trainer versions). After
    an import, no manifest that no tag points at may remain, in the image list or the content store."""
    from jobgen.localcluster import realnode

    node, bins = real_cluster.cluster.node, binaries()
    ref = f"localhost/jobgen/prune-probe-{uuid.uuid4().hex[:6]}:local"

    def build(version: str) -> None:
        root = tmp_path / version
        root.mkdir()
        (root / "version").write_text(version)
        tar = tmp_path / f"{version}.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tar), "."], check=True)
        subprocess.run(["podman", "import", str(tar), ref], check=True, capture_output=True, env=realnode._podman_env())

    def rows() -> list[list[str]]:
        out = node._ctr(bins, "images", "ls").stdout.splitlines()[1:]
        return [line.split() for line in out if line.strip()]

    def digest_of(name: str) -> str:
        return next(r[2] for r in rows() if r[0] == name)

    try:
        build("v1")
        assert node.import_images(bins, images={"probe": ref}) == ["probe"]
        v1 = digest_of(ref)
        # the CRI plugin adds its ID record (sha256:<config digest>) for the image it has seen
        wait_for(lambda: any(r[0].startswith("sha256:") and r[2] == v1 for r in rows()), 60, "the CRI's ID record")
        build("v2")
        assert node.import_images(bins, images={"probe": ref}) == ["probe"]
        v2 = digest_of(ref)
        assert v2 != v1
        assert not [r[0] for r in rows() if r[2] == v1], "the old version is still recorded"
        assert v1 not in node._ctr(bins, "content", "ls", "-q").stdout.split(), "the old manifest is still stored"
    finally:
        current = {r[2] for r in rows() if r[0] == ref}
        names = [r[0] for r in rows() if r[0] == ref or (r[0].startswith("sha256:") and r[2] in current)]
        if names:
            node._ctr(bins, "images", "rm", "--sync", *names, check=False)
        subprocess.run(["podman", "rmi", "-f", ref], capture_output=True, env=realnode._podman_env(), check=False)


def test_a_missing_image_fails_with_a_clear_error_and_no_pull_leaves_the_machine(real_cluster):
    with pytest.raises(ClusterError, match=r"localhost/jobgen/nope:local not on the real node.*make images-local"):
        real_cluster.cluster.node.require_images(binaries(), ["localhost/jobgen/nope:local"])
    name = f"nope-{uuid.uuid4().hex[:6]}"
    real_cluster.apply(pod(name, "localhost/jobgen/nope:local", ["true"]))
    try:
        reason = wait_for(
            lambda: waiting_reason(real_cluster, name) if "Err" in waiting_reason(real_cluster, name) else "",
            120,
            f"pod {name} to fail pulling",
        )
        assert reason.startswith(("ErrImagePull", "ImagePullBackOff")), reason
        # every registry is sent to a closed local port (hosts.toml): the pull cannot leave the machine
        events = real_cluster.kubectl(
            "get", "events", "-n", TRAINING_NAMESPACE, f"--field-selector=involvedObject.name={name}", "-o", "json"
        ).stdout
        assert "127.0.0.1:9" in events, events[-2000:]
    finally:
        real_cluster.kubectl("delete", "pod", name, "-n", TRAINING_NAMESPACE, "--wait=false", check=False)


def test_restricted_pod_security_is_enforced_on_the_training_namespace(real_cluster):
    ns = real_cluster.get("namespace", TRAINING_NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    bad = pod(f"root-{uuid.uuid4().hex[:6]}", IMAGES["watcher"], ["true"], restricted=False)
    out = real_cluster.apply(bad, check=False)
    assert out.returncode != 0
    assert 'violates PodSecurity "restricted' in out.stderr, out.stderr


def test_a_pod_reaches_the_apiserver_service_dns_and_the_host(real_cluster, host_listener):
    """In a container: CoreDNS resolves the kubernetes Service, kube-proxy carries its ClusterIP to the
    apiserver (TLS with the ServiceAccount's CA and token), and the host answers on the node address."""
    port, got = host_listener
    script = f"""
import json, socket, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ip = socket.gethostbyname("kubernetes.default.svc.cluster.local")
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version",
                             headers={{"Authorization": "Bearer " + open(sa + "/token").read()}})
version = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
with socket.create_connection(("{NODE_IP}", {port}), timeout=10) as s:
    s.sendall(b"hello from a pod")
print(json.dumps({{"ip": ip, "version": version}}))
"""
    name = f"net-{uuid.uuid4().hex[:6]}"
    real_cluster.apply(pod(name, IMAGES["watcher"], ["python", "-c", script]))
    try:
        wait_for(lambda: phase(real_cluster, name) in ("Succeeded", "Failed"), 180, f"pod {name} to finish")
        logs = real_cluster.kubectl("logs", name, "-n", TRAINING_NAMESPACE).stdout
        assert phase(real_cluster, name) == "Succeeded", logs
        result = json.loads(logs.strip().splitlines()[-1])
        assert result == {"ip": "10.96.0.1", "version": read_versions()["KUBERNETES_VERSION"]}
        assert got == [b"hello from a pod"]
    finally:
        real_cluster.kubectl("delete", "pod", name, "-n", TRAINING_NAMESPACE, "--wait=false", check=False)


def test_kubectl_logs_and_exec_go_through_the_kubelet(real_cluster):
    name = f"exec-{uuid.uuid4().hex[:6]}"
    real_cluster.apply(
        pod(name, IMAGES["watcher"], ["python", "-c", "import time; print('up', flush=True); time.sleep(600)"])
    )
    try:
        wait_for(lambda: phase(real_cluster, name) == "Running", 120, f"pod {name} Running")
        wait_for(
            lambda: "up" in real_cluster.kubectl("logs", name, "-n", TRAINING_NAMESPACE, check=False).stdout,
            30,
            "its log",
        )
        out = real_cluster.kubectl("exec", name, "-n", TRAINING_NAMESPACE, "--", "id", "-u")
        assert out.stdout.strip() == "65532"
        t = time.monotonic()
        real_cluster.kubectl("delete", "pod", name, "-n", TRAINING_NAMESPACE, "--timeout=60s")
        assert time.monotonic() - t < 60
    finally:
        real_cluster.kubectl("delete", "pod", name, "-n", TRAINING_NAMESPACE, "--wait=false", check=False)
