"""Start and stop the local control plane: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, the Kubeflow training-operator and kwok, each a tracked process."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import nodes, pki, procs, realnode, waits
from .bins import CLUSTER_BINARIES, NODE_BINARIES, REPO_ROOT, Binaries, cache_dir, ensure_binaries
from .errors import ClusterError

OPERATOR_NAMESPACE = "kubeflow"
OPERATOR_SA = "training-operator"
OPERATOR_MANIFESTS = REPO_ROOT / "manifests" / "training-operator"
TRAINING_MANIFESTS = REPO_ROOT / "manifests" / "training"
PYTORCH_INIT_CONTAINER = OPERATOR_MANIFESTS / "pytorch-init-container.gotmpl"
# The operator's webhook server reads its certs from this fixed path (pkg/cert in v1.9.4).
WEBHOOK_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")  # noqa: S108 - the operator's fixed path
# Kinds of the operator install that need the operator running in the cluster.
IN_CLUSTER_KINDS = {"Deployment", "Service", "ValidatingWebhookConfiguration"}
FIELD_MANAGER = "jobgen-localcluster"
SERVICE_CIDR = "10.96.0.0/16"
EXIT_CODE_ANNOTATION = "localcluster.jobgen.io/exit-code"
RUN_FOR_ANNOTATION = "localcluster.jobgen.io/run-for"

Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_state_dir(name: str = "default") -> Path:
    return Path(os.environ.get("JOBGEN_LOCALCLUSTER_DIR") or cache_dir() / "localcluster" / name)


@dataclass
class ClusterInfo:
    """What `up` wrote to <state>/state.json."""

    kubeconfig: str
    context: str
    server: str
    bin_dir: str
    state_dir: str
    ports: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    startup_seconds: float = 0.0
    real_node: bool = False


class LocalCluster:
    """One local control plane rooted at `state_dir` (pidfiles, logs, PKI, etcd data, kubeconfigs)."""

    def __init__(self, state_dir: Path | None = None, context: str = "jobgen-local", log: Log = _stderr) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.context = context
        self.log = log
        self.pki = pki.PKI(self.state_dir / "pki")

    # --- paths -------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def info(self) -> ClusterInfo | None:
        try:
            return ClusterInfo(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    # --- status ------------------------------------------------------------
    def processes(self) -> dict[str, bool]:
        """name -> running, for every pidfile in the state dir."""
        out: dict[str, bool] = {}
        for pf in procs.pidfiles(self.state_dir):
            entry = pf.read()
            out[pf.name] = entry is not None and procs.running(*entry)
        return out

    @property
    def node(self) -> realnode.RealNode:
        return realnode.RealNode(self.state_dir, self.log)

    def is_up(self) -> bool:
        info = self.info()
        ps = self.processes()
        if info is None or not ps or not all(ps.values()):
            return False
        return waits.http_ok(
            _api_host(info.real_node),
            info.ports["apiserver"],
            "/readyz",
            tls=True,
            ca=self.pki.ca_cert,
            cert=(self.pki.cert(pki.ADMIN.name), self.pki.key(pki.ADMIN.name)),
        )

    # --- down --------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every process this state dir started (newest first). Returns their names.

        With a real node: first its pods are deleted through the kubelet (which removes their
        sandboxes properly), then leftover containers through containerd, and after the processes
        stop, leftover shims, mounts, network namespaces, iptables rules and the bridge."""
        stopped = []
        node = self.node
        bins = None
        if node.exists():
            try:
                bins = ensure_binaries(())
            except ClusterError:
                bins = None
            self._stop_real_node(node, bins)
        for pf in reversed(procs.pidfiles(self.state_dir)):
            if procs.stop(pf):
                stopped.append(pf.name)
        if node.exists():
            node.teardown(bins)
        shutil.rmtree(self.state_dir / "etcd-data", ignore_errors=True)
        self.state_file.unlink(missing_ok=True)
        return stopped

    def _stop_real_node(self, node: realnode.RealNode, bins: Binaries | None) -> None:
        """While the apiserver, kubelet and containerd still run: drain, then remove what is left."""
        procs_up = self.processes()
        if procs_up.get("kube-apiserver") and procs_up.get("kubelet") and self.kubeconfig.exists():
            node.drain(lambda *a, check=True: self.kubectl(bins, *a, check=check))
        for name in ("kubelet", "kube-proxy", "coredns"):
            pf = procs.Pidfile(self.state_dir / "pids" / f"{name}.pid")
            procs.stop(pf)
        if bins is not None and procs_up.get("containerd"):
            node.remove_containers(bins)

    # --- up ----------------------------------------------------------------
    def up(self, timeout: float = 180.0, real_node: bool = False) -> ClusterInfo:
        if self.is_up():
            info = self.info()
            assert info is not None
            if info.real_node != real_node:
                raise ClusterError(
                    f"the local cluster in {self.state_dir} is running "
                    f"{'with' if info.real_node else 'without'} a real node: run down first"
                )
            self.log(f"local cluster already running (kubeconfig {info.kubeconfig})")
            return info
        if procs.pidfiles(self.state_dir) or self.node.exists():
            self.down()  # leftovers of a half-started or crashed cluster
        t0 = time.monotonic()
        bins = ensure_binaries(CLUSTER_BINARIES + (NODE_BINARIES if real_node else ()))
        if real_node:
            self.node.preflight(bins)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            info = self._start(bins, t0, timeout, real_node)
        except BaseException:
            self.down()
            raise
        self.state_file.write_text(json.dumps(asdict(info), indent=2) + "\n")
        self.log(f"local cluster up in {info.startup_seconds:.1f}s; kubeconfig {info.kubeconfig}")
        return info

    def _start(self, bins: Binaries, t0: float, timeout: float, real_node: bool = False) -> ClusterInfo:
        deadline = t0 + timeout
        sd = self.state_dir
        operator_ident = pki.service_account_identity(OPERATOR_NAMESPACE, OPERATOR_SA)
        idents: tuple[pki.Identity, ...] = (pki.ADMIN, pki.CONTROLLER_MANAGER, pki.SCHEDULER, pki.KWOK, operator_ident)
        if real_node:
            idents += (KUBELET,)
        self.pki.ensure(idents, extra_ips=(realnode.NODE_IP,) if real_node else ())
        names: tuple[str, ...] = (
            "etcd",
            "etcd-peer",
            "apiserver",
            "controller-manager",
            "scheduler",
            "operator-webhook",
            "operator-metrics",
            "operator-probe",
            "kwok",
        )
        if real_node:
            names += ("kubelet", "kubelet-healthz", "proxy-healthz", "proxy-metrics", "coredns-health")
        taken: set[int] = set()
        ports = {n: procs.free_port(taken) for n in names}
        # With a real node the apiserver listens on the node address (the bridge), where pods reach it
        # through the kubernetes Service; host clients use the same address.
        api_host = _api_host(real_node)
        server = f"https://{api_host}:{ports['apiserver']}"
        kc = {
            ident.name: self.pki.kubeconfig(sd / f"{ident.name}.kubeconfig", server, ident, self.context)
            for ident in idents
        }
        self.pki.kubeconfig(self.kubeconfig, server, pki.ADMIN, self.context)

        def left() -> float:
            return max(deadline - time.monotonic(), 1.0)

        rendering = self._render_install(bins)

        if real_node:
            self.node.setup_host()

        # etcd
        data = sd / "etcd-data"
        shutil.rmtree(data, ignore_errors=True)
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        self._spawn(
            "etcd",
            [
                str(bins.path("etcd")),
                "--name=jobgen",
                f"--data-dir={data}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=jobgen={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait("etcd", lambda: waits.http_ok("127.0.0.1", ports["etcd"], "/health"), left())

        # kube-apiserver
        p = self.pki
        self._spawn(
            "kube-apiserver",
            [
                str(bins.path("kube-apiserver")),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={api_host}",
                f"--secure-port={ports['apiserver']}",
                f"--advertise-address={api_host}",
                f"--tls-cert-file={p.cert('apiserver')}",
                f"--tls-private-key-file={p.key('apiserver')}",
                f"--client-ca-file={p.ca_cert}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={p.sa_pub}",
                f"--service-account-signing-key-file={p.sa_key}",
                "--authorization-mode=Node,RBAC",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--profiling=false",
                f"--cert-dir={sd / 'apiserver-certs'}",
                # kwok nodes: no kubernetes Service endpoints (nothing in a pod could use them).
                # A real node: the kubernetes Service points at the node address, as pods need.
                *(
                    (
                        "--endpoint-reconciler-type=lease",
                        f"--kubelet-client-certificate={p.cert(pki.ADMIN.name)}",
                        f"--kubelet-client-key={p.key(pki.ADMIN.name)}",
                        f"--kubelet-certificate-authority={p.ca_cert}",
                        "--kubelet-preferred-address-types=InternalIP",
                    )
                    if real_node
                    else ("--endpoint-reconciler-type=none",)
                ),
            ],
        )
        admin_cert = (p.cert(pki.ADMIN.name), p.key(pki.ADMIN.name))
        self._wait(
            "kube-apiserver",
            lambda: waits.http_ok(api_host, ports["apiserver"], "/readyz", tls=True, ca=p.ca_cert, cert=admin_cert),
            left(),
        )

        # controllers and scheduler
        cm_kc = kc[pki.CONTROLLER_MANAGER.name]
        self._spawn(
            "kube-controller-manager",
            [
                str(bins.path("kube-controller-manager")),
                f"--kubeconfig={cm_kc}",
                f"--authentication-kubeconfig={cm_kc}",
                f"--authorization-kubeconfig={cm_kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['controller-manager']}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={p.sa_key}",
                f"--root-ca-file={p.ca_cert}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--cluster-name={self.context}",
                "--profiling=false",
                # kwok pod IPs are loopback addresses (kwok --cidr below), which Endpoints/EndpointSlices reject.
                # A real node's pods have bridge addresses, and CoreDNS answers headless Services (the
                # operator's MASTER_ADDR) from EndpointSlices: keep those controllers there.
                *(
                    ()
                    if real_node
                    else (
                        "--controllers=*,-endpoints-controller,-endpointslice-controller,-endpointslice-mirroring-controller",
                    )
                ),
            ],
        )
        sch_kc = kc[pki.SCHEDULER.name]
        self._spawn(
            "kube-scheduler",
            [
                str(bins.path("kube-scheduler")),
                f"--kubeconfig={sch_kc}",
                f"--authentication-kubeconfig={sch_kc}",
                f"--authorization-kubeconfig={sch_kc}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['scheduler']}",
                "--profiling=false",
            ],
        )

        # training-operator install (minus its in-cluster Deployment/Service/webhook) and our manifests
        self._apply_install(bins, rendering, left())
        self._write_webhook_certs()
        self._spawn(
            "training-operator",
            [
                str(bins.path("training-operator")),
                "--enable-scheme=pytorchjob",
                "--enable-scheme=tfjob",
                # the PyTorchJob worker init container GKE gets (manifests/training-operator), with
                # the local base image: PodSecurity `restricted` (manifests/training) admits it
                f"--pytorch-init-container-template-file={PYTORCH_INIT_CONTAINER}",
                f"--pytorch-init-container-image={realnode.BASE_IMAGE}",
                f"--metrics-bind-address=127.0.0.1:{ports['operator-metrics']}",
                f"--health-probe-bind-address=127.0.0.1:{ports['operator-probe']}",
                f"--webhook-server-port={ports['operator-webhook']}",
                "--leader-elect=false",
            ],
            env={"KUBECONFIG": str(kc[operator_ident.name]), "MY_POD_NAMESPACE": OPERATOR_NAMESPACE},
        )

        # kwok and the fake GKE nodes. Node and pod IPs are loopback addresses, so that nothing
        # (apiserver proxy, kubectl logs/exec) can ever send traffic off this machine.
        stages = sd / "kwok-stages.yaml"
        stages.write_text(resources.files("jobgen.localcluster").joinpath("data/stages.yaml").read_text())
        self._spawn(
            "kwok",
            [
                str(bins.path("kwok")),
                f"--kubeconfig={kc[pki.KWOK.name]}",
                f"--config={stages}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={'='.join(nodes.KWOK_LABEL)}",
                f"--server-address=127.0.0.1:{ports['kwok']}",
                "--cidr=127.64.0.0/16",
                "--node-ip=127.0.0.1",
                "--node-lease-duration-seconds=40",
            ],
        )
        # With a real node, CPU pods run there: the kwok CPU pool is left out (GPU pools stay).
        pools = tuple(pl for pl in nodes.POOLS if pl.gpus) if real_node else nodes.POOLS
        self.kubectl(
            bins,
            "apply",
            "--server-side",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
            input=yaml.safe_dump_all(nodes.node_objects(pools)),
        )
        if real_node:
            self._start_real_node(bins, ports, server, left)

        self._wait(
            "kube-scheduler", lambda: waits.http_ok("127.0.0.1", ports["scheduler"], "/healthz", tls=True), left()
        )
        self._wait(
            "kube-controller-manager",
            lambda: waits.http_ok("127.0.0.1", ports["controller-manager"], "/healthz", tls=True),
            left(),
        )
        self._wait("training-operator", lambda: waits.http_ok("127.0.0.1", ports["operator-probe"], "/readyz"), left())
        self._wait("kwok nodes", lambda: self._nodes_ready(bins, pools), left(), proc="kwok")
        if real_node:
            self._wait(
                f"node {realnode.NODE_NAME} Ready",
                lambda: self._node_ready(bins, realnode.NODE_NAME),
                left(),
                proc="kubelet",
            )
        self._wait(
            "default ServiceAccount",
            lambda: self.kubectl(
                bins, "get", "serviceaccount", "default", "-n", "default", "-o", "name", check=False
            ).returncode
            == 0,
            left(),
            proc="kube-controller-manager",
        )

        return ClusterInfo(
            kubeconfig=str(self.kubeconfig),
            context=self.context,
            server=server,
            bin_dir=str(bins.dir),
            state_dir=str(sd),
            ports=ports,
            started_at=time.time(),
            startup_seconds=time.monotonic() - t0,
            real_node=real_node,
        )

    def _start_real_node(self, bins: Binaries, ports: dict[str, int], server: str, left: Callable[[], float]) -> None:
        node = self.node
        p = self.pki
        p.ensure_serving("kubelet-serving", realnode.NODE_NAME, (realnode.NODE_IP,), (realnode.NODE_NAME,))
        kubelet_kc = p.kubeconfig(self.state_dir / "kubelet.kubeconfig", server, KUBELET, self.context)
        nports = realnode.Ports(
            kubelet=ports["kubelet"],
            kubelet_healthz=ports["kubelet-healthz"],
            proxy_healthz=ports["proxy-healthz"],
            proxy_metrics=ports["proxy-metrics"],
            coredns_health=ports["coredns-health"],
        )
        files = node.write_configs(
            bins,
            server=server,
            ca=p.ca_cert,
            admin_kubeconfig=self.kubeconfig,
            kubelet_kubeconfig=kubelet_kc,
            serving=(p.cert("kubelet-serving"), p.key("kubelet-serving")),
            ports=nports,
        )
        node.start(
            bins,
            lambda n, argv, env: self._spawn(n, argv, env),
            lambda what, check, t, proc: self._wait(what, check, t, proc=proc),
            files,
            nports,
            kubelet_kc,
            self.kubeconfig,
            left,
        )

    # --- helpers -----------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        procs.start(name, argv, self.state_dir, env=env)

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, proc: str | None = None) -> None:
        """Wait for `check`; fail in one line naming the log if it times out or a process dies."""
        name = proc or what
        t = time.monotonic()

        def alive() -> str | None:
            for pf in procs.pidfiles(self.state_dir):
                entry = pf.read()
                if entry and not procs.running(*entry):
                    return (
                        f"{pf.name} exited during startup: {self._last_log_line(pf.name)} (log: {self._log(pf.name)})"
                    )
            return None

        try:
            waits.until(check, timeout, what, alive)
        except ClusterError as e:
            if "timed out" in str(e):
                raise ClusterError(f"{e}: {self._last_log_line(name)} (log: {self._log(name)})") from None
            raise
        self.log(f"  {what} ready ({time.monotonic() - t:.1f}s)")

    def _log(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def _last_log_line(self, name: str) -> str:
        lines = [ln.strip() for ln in procs.log_tail(self.state_dir, name, 20).splitlines() if ln.strip()]
        errors = [ln for ln in lines if any(w in ln.lower() for w in ("error", "fail", "fatal", "panic"))]
        line = (errors or lines or ["(empty log)"])[-1]
        return line if len(line) <= 300 else line[:297] + "..."

    def kubectl(
        self,
        bins: Binaries | None,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        exe = (bins or ensure_binaries()).path("kubectl")
        proc = subprocess.run(
            [str(exe), f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and proc.returncode != 0:
            msg = " ".join((proc.stderr.strip() or proc.stdout.strip()).split())
            raise ClusterError(f"kubectl {' '.join(args[:2])} failed: {msg[:500]}")
        return proc

    def _render_install(self, bins: Binaries) -> subprocess.Popen[str]:
        """`kubectl kustomize` of the operator install, started early to overlap with etcd/apiserver startup."""
        return subprocess.Popen(
            [str(bins.path("kubectl")), "kustomize", str(OPERATOR_MANIFESTS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _apply_install(self, bins: Binaries, rendering: subprocess.Popen[str], timeout: float) -> None:
        t = time.monotonic()
        rendered, err = rendering.communicate()
        if rendering.returncode != 0:
            raise ClusterError(f"kubectl kustomize {OPERATOR_MANIFESTS} failed: {err.strip()}")
        # Split without parsing: the CRDs are megabytes of YAML and PyYAML is slow.
        crds: list[str] = []
        rest: list[str] = []
        crd_names: list[str] = []
        for doc in _yaml_docs(rendered):
            kind = _top_level(doc, "kind")
            if kind in IN_CLUSTER_KINDS:
                continue
            if kind == "CustomResourceDefinition":
                crds.append(doc)
                crd_names.append(_crd_name(doc))
            else:
                rest.append(doc)
        apply = ("apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-")
        self.kubectl(bins, *apply, input="\n---\n".join(crds))
        self.kubectl(bins, *apply, input="\n---\n".join(rest))
        # kubectl's default field manager, as `make operator` uses, so re-applying by hand just works
        self.kubectl(bins, "apply", "--server-side", "--force-conflicts", "-k", str(TRAINING_MANIFESTS))
        self.kubectl(
            bins, "wait", "--for=condition=Established", f"--timeout={int(timeout)}s", *(f"crd/{n}" for n in crd_names)
        )
        self.log(f"  CRDs, operator RBAC and manifests/training applied ({time.monotonic() - t:.1f}s)")

    def _write_webhook_certs(self) -> None:
        """The operator only starts its controllers once tls.crt/tls.key exist in its cert dir.

        The path is fixed and shared by every local cluster on this machine, so all of them
        use one self-signed pair (kept in the cache); no webhook configuration points at it."""
        if (WEBHOOK_CERT_DIR / "tls.crt").exists() and (WEBHOOK_CERT_DIR / "tls.key").exists():
            return
        WEBHOOK_CERT_DIR.mkdir(parents=True, exist_ok=True)
        crt, key = pki.self_signed_serving_pair(f"{OPERATOR_SA}.{OPERATOR_NAMESPACE}.svc")
        for fname, data in (("tls.key", key), ("tls.crt", crt)):
            tmp = WEBHOOK_CERT_DIR / f".{fname}.{os.getpid()}"
            tmp.write_bytes(data)
            tmp.replace(WEBHOOK_CERT_DIR / fname)

    def _nodes_ready(self, bins: Binaries, pools: tuple[nodes.Pool, ...] = nodes.POOLS) -> bool:
        out = self.kubectl(
            bins,
            "get",
            "nodes",
            "-l",
            "=".join(nodes.KWOK_LABEL),
            "-o",
            "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}",
            check=False,
        ).stdout.split()
        return len(out) == len(nodes.node_objects(pools)) and all(s == "True" for s in out)

    def _node_ready(self, bins: Binaries, name: str) -> bool:
        out = self.kubectl(
            bins, "get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}", check=False
        )
        return out.stdout.strip() == "True"

    # --- test hooks ----------------------------------------------------------
    @staticmethod
    def pod_annotations(exit_code: int | None = None, run_for: str | None = None) -> dict[str, str]:
        """Annotations for a pod template: every attempt exits with `exit_code` after `run_for`."""
        ann: dict[str, str] = {}
        if exit_code is not None:
            ann[EXIT_CODE_ANNOTATION] = str(exit_code)
        if run_for is not None:
            ann[RUN_FOR_ANNOTATION] = run_for
        return ann

    def fail_replica(self, namespace: str, pod: str, exit_code: int, after: str = "0s") -> None:
        """Make one live pod's containers exit with `exit_code` (0 succeeds) `after` from now.

        Only this pod attempt is affected: a pod the operator recreates runs normally."""
        patch: dict[str, Any] = {
            "metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(exit_code), RUN_FOR_ANNOTATION: after}}
        }
        self.kubectl(None, "patch", "pod", pod, "-n", namespace, "--type=merge", "-p", json.dumps(patch))


KUBELET = pki.Identity("kubelet", f"system:node:{realnode.NODE_NAME}", ("system:nodes",))


def _api_host(real_node: bool) -> str:
    return realnode.NODE_IP if real_node else "127.0.0.1"


def _yaml_docs(text: str) -> list[str]:
    return [d for d in re.split(r"^---[ \t]*$", text, flags=re.MULTILINE) if d.strip()]


def _top_level(doc: str, key: str) -> str | None:
    m = re.search(rf"^{key}:[ \t]*(\S+)[ \t]*$", doc, flags=re.MULTILINE)
    return m.group(1).strip("'\"") if m else None


def _crd_name(doc: str) -> str:
    m = re.search(r"^metadata:\n(?:[ \t]+.*\n)*?[ \t]{2}name:[ \t]*(\S+)", doc, flags=re.MULTILINE)
    if not m:
        raise ClusterError("a CustomResourceDefinition in the operator install has no metadata.name")
    return m.group(1).strip("'\"")
