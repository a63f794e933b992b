"""The real node of the local cluster (``up --real-node``): containerd + kubelet + kube-proxy + CoreDNS.

One node, ``jobgen-node``, runs real containers beside the kwok GPU pools. Why each setting is there
is written next to it and in docs/local-cluster.md. Everything lives under ``<state>/node``: the
bridge, sysctls and iptables rules it changes on the host are recorded in ``<state>/node/host.json``
and undone by :meth:`RealNode.teardown`, which also removes every container, shim, mount and network
namespace the node made.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import procs, waits
from .bins import REPO_ROOT, Binaries, cache_dir
from .errors import ClusterError

NODE_NAME = "jobgen-node"
BRIDGE = "jobgen0"
POD_CIDR = "10.244.0.0/24"
# The node's address is the bridge's: the kubelet refuses a loopback node IP, and pods reach the host
# (apiserver, fake-gcs-server, the Pub/Sub emulator, CoreDNS) on their own subnet's gateway.
NODE_IP = "10.244.0.1"
CLUSTER_DOMAIN = "cluster.local"
TRAINING_NAMESPACE = "training"  # manifests/training/namespace.yaml enforces PodSecurity `restricted`
NODE_LABEL = ("jobgen.io/real-node", "true")
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
RUNC = ("/usr/sbin/runc", "/usr/bin/runc")
# localhost/...: never pulled (no registry here); hack/images-local.sh builds them into podman's storage.
PAUSE_IMAGE = "localhost/jobgen/pause:3.10"
BASE_IMAGE = "localhost/jobgen/base:bookworm"
IMAGES = {
    "pause": PAUSE_IMAGE,
    # the operator's PyTorchJob worker init container (wait for the master's DNS name):
    # manifests/training-operator/pytorch-init-container.gotmpl
    "base": BASE_IMAGE,
    "trainer": "localhost/jobgen/trainer:local",
    "tf-trainer": "localhost/jobgen/tf-trainer:local",
    "watcher": "localhost/jobgen/watcher:local",
}
K8S_NAMESPACE = "k8s.io"  # containerd namespace of the CRI plugin
SYSCTLS = {
    # pods' traffic to ClusterIPs and to the host is routed by the host
    "net/ipv4/ip_forward": "1",
    # pod -> Service -> pod on the same bridge: kube-proxy's DNAT must see bridged packets
    "net/bridge/bridge-nf-call-iptables": "1",
}
CONTAINERS_CONF = REPO_ROOT / "hack" / "images" / "containers.conf"
# containerd's state (sockets, shim sockets, task bundles, network namespaces): a short path, since
# unix socket paths are limited to 108 bytes. One real node per machine (the bridge is fixed too).
RUN_DIR = Path("/run/jobgen-node")

Log = Callable[[str], None]
Spawn = Callable[[str, list[str], dict[str, str] | None], None]
Wait = Callable[[str, Callable[[], bool], float, str | None], None]


@dataclass(frozen=True)
class Ports:
    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    coredns_health: int


class RealNode:
    """The real node's files, processes and host changes, rooted at ``<state>/node``."""

    def __init__(self, state_dir: Path, log: Log) -> None:
        self.state_dir = state_dir
        self.dir = state_dir / "node"
        self.log = log

    # --- paths ---------------------------------------------------------------
    @property
    def marker(self) -> Path:
        return self.dir / "host.json"

    @property
    def containerd_sock(self) -> Path:
        return RUN_DIR / "containerd.sock"

    @staticmethod
    def containerd_root() -> Path:
        """containerd's content and snapshots, kept across ups in the cache: an `up` imports only
        images that changed since the last one (the trainer image is GBs)."""
        return cache_dir() / "node" / "containerd"

    def exists(self) -> bool:
        return self.marker.exists()

    # --- preflight -----------------------------------------------------------
    def preflight(self, bins: Binaries) -> None:
        """Fail in one line with what is missing, before anything starts."""
        if os.geteuid() != 0:
            raise ClusterError("--real-node needs root (containerd, the kubelet, bridges, iptables)")
        missing = [
            n
            for n in ("kubelet", "kube-proxy", "containerd", "containerd-shim-runc-v2", "ctr", "coredns")
            if not os.access(bins.path(n), os.X_OK)
        ]
        if missing:
            raise ClusterError(
                f"missing node binaries {', '.join(missing)}: run hack/build-bins.sh node containerd coredns"
            )
        tools = {
            "runc": _first(RUNC),
            "bridge CNI plugin": _cni_dir(),
            "iptables": shutil.which("iptables"),
            "ip": shutil.which("ip"),
            "podman": shutil.which("podman"),
        }
        absent = [k for k, v in tools.items() if not v]
        if absent:
            raise ClusterError(f"missing {', '.join(absent)}: run hack/container-tools.sh (Debian packages)")
        owner = _read(RUN_DIR / "owner")
        if owner and owner != str(self.state_dir) and not self.reclaim_stale(owner, bins):
            raise ClusterError(
                f"another real node runs on this machine (one at a time), from {owner}; stop it with "
                f"`python -m jobgen.localcluster down --state-dir {owner}`"
            )
        if _link_exists(BRIDGE) and _read(RUN_DIR / "owner") != str(self.state_dir):
            raise ClusterError(
                f"network interface {BRIDGE} exists and no real node of jobgen's owns it ({RUN_DIR}/owner is "
                f"absent): remove it with `ip link del {BRIDGE}` if nothing else uses it"
            )
        missing_images = [ref for ref in IMAGES.values() if not _podman_image_exists(ref)]
        if PAUSE_IMAGE in missing_images:
            raise ClusterError(f"image {PAUSE_IMAGE} not built: run make images-local (hack/images-local.sh)")
        if missing_images:
            self.log(f"  note: images not built yet (make images-local): {', '.join(missing_images)}")

    def reclaim_stale(self, owner: str, bins: Binaries | None) -> bool:
        """Undo what a real node left when its run was killed (SIGKILL, OOM, a lost session): when no
        process of it runs any more. Returns whether the host is free now; a live node is left alone."""
        for _ in range(2):  # twice: a process in the middle of an exec shows no command line for an instant
            if any(_processes_mentioning((owner, str(RUN_DIR)))):
                return False
            time.sleep(0.5)
        stale = RealNode(Path(owner), self.log)
        self.log(f"  cleaning up a real node left by {owner} (none of its processes runs)")
        if stale.exists():
            stale.teardown(bins)
        else:  # its state dir is gone too (a deleted temp dir): what is left is host state
            for mnt in _mounts_under(RUN_DIR):
                subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
            if bins is not None and os.access(bins.path("kube-proxy"), os.X_OK):
                subprocess.run(
                    [str(bins.path("kube-proxy")), "--cleanup"], capture_output=True, check=False, timeout=60
                )
            if _link_exists(BRIDGE):
                subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True, check=False)
            _remove_cgroups()
            shutil.rmtree(RUN_DIR, ignore_errors=True)
        return not _read(RUN_DIR / "owner") and not _link_exists(BRIDGE)

    # --- host network ----------------------------------------------------------
    def setup_host(self) -> None:
        """Bridge with the node address, sysctls; every change recorded for teardown first."""
        self.dir.mkdir(parents=True, exist_ok=True)
        saved = {k: _read_sysctl(k) for k in SYSCTLS}
        self.marker.write_text(json.dumps({"bridge": BRIDGE, "sysctls": saved}, indent=2) + "\n")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        (RUN_DIR / "owner").write_text(str(self.state_dir) + "\n")
        if not _link_exists(BRIDGE):
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "replace", f"{NODE_IP}/24", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        for key, value in SYSCTLS.items():
            _write_sysctl(key, value)

    # --- configuration files ---------------------------------------------------
    def write_configs(
        self,
        bins: Binaries,
        *,
        server: str,
        ca: Path,
        admin_kubeconfig: Path,
        kubelet_kubeconfig: Path,
        serving: tuple[Path, Path],
        ports: Ports,
    ) -> dict[str, Path]:
        d = self.dir
        for sub in ("bin", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "registry/_default"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        self.containerd_root().mkdir(parents=True, exist_ok=True)
        # No pull ever leaves the machine: every registry resolves to a closed local port.
        (d / "registry" / "_default" / "hosts.toml").write_text(
            'server = "http://127.0.0.1:9"\n\n[host."http://127.0.0.1:9"]\n  capabilities = ["pull", "resolve"]\n'
        )
        # containerd finds its shim by name on PATH; the cache names binaries <name>-<version>.
        shim = d / "bin" / "containerd-shim-runc-v2"
        shim.unlink(missing_ok=True)
        shim.symlink_to(bins.path("containerd-shim-runc-v2"))
        files = {
            "containerd": d / "containerd.toml",
            "cni": d / "cni" / "net.d" / "10-jobgen.conflist",
            "kubelet": d / "kubelet.yaml",
            "kube-proxy": d / "kube-proxy.yaml",
            "coredns": d / "Corefile",
        }
        files["containerd"].write_text(
            containerd_config(d, self.containerd_root(), runc=_first(RUNC) or "runc", cni_dir=_cni_dir() or "")
        )
        files["cni"].write_text(json.dumps(cni_config(d / "cni" / "ipam"), indent=2) + "\n")
        files["kubelet"].write_text(
            yaml.safe_dump(
                kubelet_config(ca=ca, serving=serving, ports=ports, sock=self.containerd_sock, logs=d / "pod-logs")
            )
        )
        files["kube-proxy"].write_text(yaml.safe_dump(kube_proxy_config(admin_kubeconfig, ports)))
        files["coredns"].write_text(corefile(admin_kubeconfig, ports))
        return files

    # --- processes -------------------------------------------------------------
    def start(
        self,
        bins: Binaries,
        spawn: Spawn,
        wait: Wait,
        files: dict[str, Path],
        ports: Ports,
        kubelet_kubeconfig: Path,
        admin_kubeconfig: Path,
        timeout: Callable[[], float],
    ) -> None:
        d = self.dir
        path_env = {"PATH": f"{d / 'bin'}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        spawn("containerd", [str(bins.path("containerd")), f"--config={files['containerd']}"], path_env)
        wait("containerd", lambda: self._ctr(bins, "version", check=False).returncode == 0, timeout(), None)
        self.import_images(bins)
        spawn("coredns", [str(bins.path("coredns")), "-conf", str(files["coredns"])], None)
        spawn("kube-proxy", [str(bins.path("kube-proxy")), f"--config={files['kube-proxy']}"], None)
        spawn(
            "kubelet",
            [
                str(bins.path("kubelet")),
                f"--config={files['kubelet']}",
                f"--kubeconfig={kubelet_kubeconfig}",
                f"--root-dir={d / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={'='.join(NODE_LABEL)}",
                "--v=1",
            ],
            path_env,
        )
        wait("coredns", lambda: waits.http_ok("127.0.0.1", ports.coredns_health, "/health"), timeout(), None)
        wait("kube-proxy", lambda: waits.http_ok("127.0.0.1", ports.proxy_healthz, "/healthz"), timeout(), None)
        wait("kubelet", lambda: waits.http_ok("127.0.0.1", ports.kubelet_healthz, "/healthz"), timeout(), None)

    def import_images(
        self, bins: Binaries, names: tuple[str, ...] | None = None, images: Mapping[str, str] = IMAGES
    ) -> list[str]:
        """Copy the locally built images from podman's storage into containerd's k8s.io namespace.

        An image already there with the same digest is skipped (the trainer is GBs); the versions a
        new import replaced are then dropped (:meth:`prune_images`)."""
        have = self.containerd_images(bins)
        done = []
        for name, ref in images.items():
            if names is not None and name not in names:
                continue
            podman_id = _podman_image_id(ref)
            if podman_id is None:
                continue
            if have.get(ref) == podman_id:
                continue
            t = time.monotonic()
            # podman save | ctr import: streamed, no archive on disk (the trainer is GBs); the layer
            # blobs are dropped once unpacked, so containerd keeps one copy (the snapshot).
            save = subprocess.Popen(
                ["podman", "save", "--format", "docker-archive", ref],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_podman_env(),
            )
            try:
                imp = subprocess.run(
                    [
                        str(bins.path("ctr")),
                        f"--address={self.containerd_sock}",
                        f"--namespace={K8S_NAMESPACE}",
                        "images",
                        "import",
                        "--local",
                        "--discard-unpacked-layers",
                        "--snapshotter=overlayfs",
                        f"--label=io.jobgen.podman-id={podman_id}",
                        "--label=io.cri-containerd.pinned=pinned",
                        "-",
                    ],
                    stdin=save.stdout,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=1800,
                )
            finally:
                if save.stdout is not None:
                    save.stdout.close()
                save_err = save.communicate(timeout=600)[1].decode(errors="replace")
            if save.returncode != 0 or imp.returncode != 0:
                raise ClusterError(
                    f"importing {ref} into containerd failed: {(save_err or imp.stderr or imp.stdout).strip()[:400]}"
                )
            done.append(name)
            self.log(f"  image {ref} imported into containerd ({time.monotonic() - t:.1f}s)")
        if done:
            dropped = self.prune_images(bins)
            if dropped:
                self.log(f"  {len(dropped)} replaced image version(s) dropped from containerd")
        return done

    def prune_images(self, bins: Binaries) -> list[str]:
        """Drop the image versions no tag points at any more; returns their ``sha256:<id>`` names.

        containerd's CRI plugin records every image it sees under its ID as well as its tag. When a
        tag moves to a new build, the ID record of the old one stays, and with it the old layers
        (GBs for the trainer), for good: the kubelet's image GC is off on this node (its images
        cannot be pulled back). An ID record whose manifest no tag has is such an old version;
        removing it (``--sync``: containerd collects its content and snapshots at once) frees the
        space."""
        rows = [line.split() for line in self._ctr(bins, "images", "ls").stdout.splitlines()[1:] if line.strip()]
        tagged = {row[2] for row in rows if not row[0].startswith("sha256:")}
        old = [row[0] for row in rows if row[0].startswith("sha256:") and row[2] not in tagged]
        if old:
            self._ctr(bins, "images", "rm", "--sync", *old)
        return old

    def require_images(self, bins: Binaries, refs: Iterable[str]) -> None:
        """Fail in one line naming the images the node does not have (nothing is ever pulled)."""
        have = self.containerd_images(bins)
        missing = [r for r in refs if r not in have]
        if missing:
            raise ClusterError(
                f"image(s) {', '.join(missing)} not on the real node (no pull ever leaves this "
                "machine): run `make images-local`, then `python -m jobgen.localcluster import-images`"
            )

    def containerd_images(self, bins: Binaries) -> dict[str, str]:
        """ref -> the podman image id it was imported from (label io.jobgen.podman-id)."""
        out = self._ctr(bins, "images", "ls", check=False).stdout.splitlines()[1:]
        refs: dict[str, str] = {}
        for line in out:
            parts = line.split()
            if not parts:
                continue
            labels = parts[-1]
            pid = ""
            for kv in labels.split(","):
                if kv.startswith("io.jobgen.podman-id="):
                    pid = kv.partition("=")[2]
            refs[parts[0]] = pid
        return refs

    def _ctr(self, bins: Binaries, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(bins.path("ctr")), f"--address={self.containerd_sock}", f"--namespace={K8S_NAMESPACE}", *args]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
        if check and proc.returncode != 0:
            raise ClusterError(f"ctr {' '.join(args[:2])} failed: {(proc.stderr or proc.stdout).strip()[:400]}")
        return proc

    # --- teardown ----------------------------------------------------------------
    def drain(self, kubectl: Callable[..., subprocess.CompletedProcess[str]], timeout: float = 60.0) -> None:
        """Cordon the node and delete its pods while the kubelet still runs: it stops each sandbox
        properly (CNI DEL, network namespace and mounts removed)."""
        if kubectl("cordon", NODE_NAME, check=False).returncode != 0:
            return
        sel = f"spec.nodeName={NODE_NAME}"
        kubectl("delete", "pods", "-A", f"--field-selector={sel}", "--grace-period=5", "--wait=false", check=False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = kubectl("get", "pods", "-A", f"--field-selector={sel}", "-o", "name", check=False)
            if out.returncode != 0 or not out.stdout.strip():
                return
            time.sleep(0.5)
        self.log(f"  pods still on {NODE_NAME} after {timeout:.0f}s; removing their containers directly")

    def remove_containers(self, bins: Binaries) -> None:
        """Whatever the kubelet left: kill and delete every task and container in k8s.io."""
        if not self.containerd_sock.exists():
            return
        tasks = self._ctr(bins, "tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self._ctr(bins, "tasks", "kill", "--all", "--signal=SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(50):
                if self._ctr(bins, "tasks", "delete", "--force", task, check=False).returncode == 0:
                    break
                time.sleep(0.1)
        for ctr in self._ctr(bins, "containers", "ls", "-q", check=False).stdout.split():
            self._ctr(bins, "containers", "delete", ctr, check=False)

    def teardown(self, bins: Binaries | None) -> list[str]:
        """After the node's processes are stopped: shims, mounts, netns, iptables, bridge, sysctls."""
        done: list[str] = []
        if not self.dir.exists():
            return done
        for pid in self._shim_pids(bins):
            _kill(pid)
            done.append(f"shim {pid}")
        for root in (RUN_DIR, self.dir, self.containerd_root()):
            for mnt in _mounts_under(root):
                subprocess.run(["umount", "-l", mnt], capture_output=True, check=False)
                done.append(f"umount {mnt}")
        if bins is not None and os.access(bins.path("kube-proxy"), os.X_OK):
            subprocess.run([str(bins.path("kube-proxy")), "--cleanup"], capture_output=True, check=False, timeout=60)
        try:
            host = json.loads(self.marker.read_text())
        except (OSError, ValueError):
            host = {}
        if host.get("bridge") and _link_exists(host["bridge"]):
            subprocess.run(["ip", "link", "del", host["bridge"]], capture_output=True, check=False)
            done.append(f"bridge {host['bridge']}")
        done += _remove_cgroups()
        for key, value in (host.get("sysctls") or {}).items():
            if value is not None:
                _write_sysctl(key, value)
        shutil.rmtree(self.dir, ignore_errors=True)
        if _read(RUN_DIR / "owner") == str(self.state_dir):
            shutil.rmtree(RUN_DIR, ignore_errors=True)
        return done

    def leftovers(self) -> list[str]:
        """What teardown should have removed and is still there (empty when clean)."""
        out = [f"mount {m}" for root in (RUN_DIR, self.dir, self.containerd_root()) for m in _mounts_under(root)]
        out += [f"process {pid}: {cmd}" for pid, cmd in _processes_mentioning((str(RUN_DIR), str(self.dir)))]
        if _link_exists(BRIDGE):
            out.append(f"network interface {BRIDGE}")
        if RUN_DIR.exists():
            out.append(f"directory {RUN_DIR}")
        return out

    def _shim_pids(self, bins: Binaries | None) -> Iterator[int]:
        """containerd-shim-runc-v2 processes serving this node's containerd (by their -address)."""
        sock = str(self.containerd_sock)
        shim = os.path.realpath(bins.path("containerd-shim-runc-v2")) if bins else None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                exe = str((entry / "exe").readlink()).removesuffix(" (deleted)")
            except OSError:
                continue
            args = [a.decode(errors="replace") for a in argv]
            if sock in args and (shim is None or exe == shim or exe.endswith("containerd-shim-runc-v2")):
                yield int(entry.name)


# --- configuration ----------------------------------------------------------------


def containerd_config(d: Path, root: Path, *, runc: str, cni_dir: str) -> str:
    """containerd 2.x (config version 3): nothing in /etc, /var/lib or /run/containerd."""
    return f"""version = 3
root = "{root}"
state = "{RUN_DIR / "state"}"

[grpc]
  address = "{RUN_DIR / "containerd.sock"}"

[ttrpc]
  address = "{RUN_DIR / "containerd.ttrpc.sock"}"

[debug]
  level = "info"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".registry]
    # hosts.toml sending every registry to a closed local port: no pull leaves the machine.
    config_path = "{d / "registry"}"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    # The pods' sandbox image: built locally (hack/pause), since no registry is reachable.
    sandbox = "{PAUSE_IMAGE}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # Here even root may not lower an oom_score_adj (no CAP_SYS_RESOURCE): keep containers at
  # containerd's own score or above instead of the -998/-997 the kubelet asks for.
  restrict_oom_score_adj = true
  # Network namespaces as bind mounts under our state dir, not /var/run/netns: teardown finds them all.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        # Debian's runc; cgroupfs (no systemd here; the host mounts cgroup v1).
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_dir}"]
    conf_dir = "{d / "cni" / "net.d"}"
    max_conf_num = 1

[plugins."io.containerd.nri.v1.nri"]
  # NRI would open /var/run/nri/nri.sock: nothing outside our directories.
  disable = true

[plugins."io.containerd.grpc.v1.cri"]
  # kubectl logs/exec/port-forward: the streaming server on the node address only.
  stream_server_address = "{NODE_IP}"
  stream_server_port = "0"
"""


def cni_config(ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "jobgen",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                # the bridge already holds NODE_IP (setup_host): the gateway of every pod
                "isGateway": True,
                # nothing leaves the machine, and pods talk to the host on their own subnet: no masquerade
                "ipMasq": False,
                # a pod reaching itself through a Service
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "loopback"},
        ],
    }


def kubelet_config(*, ca: Path, serving: tuple[Path, Path], ports: Ports, sock: Path, logs: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This host mounts cgroup v1, which kubelet 1.35+ refuses unless told otherwise.
        "failCgroupV1": False,
        # No systemd: cgroupfs, as containerd (SystemdCgroup = false).
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{sock}",
        # container logs under the state dir, not /var/log/pods
        "podLogsDir": str(logs),
        "address": NODE_IP,
        "port": ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports.kubelet_healthz,
        "tlsCertFile": str(serving[0]),
        "tlsPrivateKeyFile": str(serving[1]),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [NODE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        # No host resolv.conf for pods: cluster names only; nothing resolves to the outside.
        "resolvConf": "",
        "registerNode": True,
        # The node is one of several users of a shared machine: evict only when really short, and never
        # garbage-collect the locally built images (they cannot be pulled back).
        "evictionHard": {
            "memory.available": "200Mi",
            "nodefs.available": "512Mi",
            "imagefs.available": "512Mi",
            "nodefs.inodesFree": "1%",
            "imagefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # No swap accounting and no kernel tuning on a host we share.
        "failSwapOn": False,
        # lowering oom_score_adj is refused on this machine (see containerd's restrict_oom_score_adj)
        "oomScoreAdj": 0,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "maxPods": 50,
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "volumeStatsAggPeriod": "0s",
        "shutdownGracePeriod": "0s",
        "containerLogMaxSize": "10Mi",
        "containerLogMaxFiles": 2,
    }


def kube_proxy_config(kubeconfig: Path, ports: Ports) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "oomScoreAdj": 0,
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
        # Leave the host's conntrack sysctls alone (0 = do not change).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # NodePorts only on the node address, never on the machine's own interfaces.
        "nodePortAddresses": [f"{NODE_IP}/32"],
    }


def corefile(kubeconfig: Path, ports: Ports) -> str:
    """CoreDNS on the node address: cluster.local from the apiserver; no forwarding (nothing else
    resolves, so nothing can leave the machine by name)."""
    return f""".:53 {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:{ports.coredns_health}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
}}
"""


# --- host helpers ----------------------------------------------------------------------


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env, timeout=1200)
    if proc.returncode != 0:
        raise ClusterError(f"{' '.join(argv[:4])} failed: {(proc.stderr or proc.stdout).strip()[:400]}")


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def _cni_dir() -> str | None:
    return next((d for d in CNI_BIN_DIRS if os.access(Path(d) / "bridge", os.X_OK)), None)


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _read_sysctl(key: str) -> str | None:
    try:
        return Path("/proc/sys", key).read_text().strip()
    except OSError:
        return None


def _write_sysctl(key: str, value: str) -> None:
    try:
        Path("/proc/sys", key).write_text(value + "\n")
    except OSError as e:
        raise ClusterError(f"cannot set sysctl {key.replace('/', '.')}={value}: {e}") from None


def _podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def _podman_image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref], env=_podman_env(), check=False).returncode == 0


def _podman_image_id(ref: str) -> str | None:
    proc = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Id}}", ref],
        env=_podman_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    points = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        fields = line.split()
        if len(fields) > 4:
            point = fields[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(set(points), key=len, reverse=True)


def _remove_cgroups() -> list[str]:
    """The kubelet's cgroup tree (cgroupfs driver: /sys/fs/cgroup/<controller>/kubepods...), once empty."""
    removed = []
    for top in Path("/sys/fs/cgroup").glob("*/kubepods"):
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            try:
                Path(dirpath).rmdir()
            except OSError:
                continue
        if not top.exists():
            removed.append(f"cgroup {top}")
    return removed


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _processes_mentioning(needles: tuple[str, ...]) -> Iterator[tuple[int, str]]:
    """Processes whose command line contains one of `needles` (our paths)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if cmd and any(n in cmd for n in needles) and procs.state_of(int(entry.name)) not in (None, "Z", "X"):
            yield int(entry.name), cmd[:200]


def _kill(pid: int) -> None:
    """SIGKILL one process we identified by its arguments, and wait until it is gone (or a zombie)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        return
    for _ in range(100):
        state = procs.state_of(pid)
        if state is None or state in ("Z", "X"):
            return
        time.sleep(0.05)
