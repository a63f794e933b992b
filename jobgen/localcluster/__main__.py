"""python -m jobgen.localcluster up|down|status|env|kubeconfig|bins|import-images [--state-dir DIR]

up          build missing binaries, start the cluster, print the kubeconfig path
            (--real-node: also a real node running containers; docs/local-cluster.md)
import-images  copy rebuilt images (make images-local) into the real node's containerd
down        stop exactly the processes `up` started
status      each process and the apiserver's readiness (exit 1 when down)
env         print `export KUBECONFIG=...` (eval "$(python -m jobgen.localcluster env)")
kubeconfig  print the kubeconfig path (exit 1 when not up)
bins        build all pinned binaries (also helm) and print their paths
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .bins import BINARIES, ensure_binaries
from .cluster import LocalCluster, default_state_dir
from .errors import ClusterError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobgen.localcluster",
        description="Local Kubernetes control plane with the Kubeflow training-operator and kwok GPU nodes.",
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "kubeconfig", "bins", "import-images"])
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="up: beside the kwok GPU pools, run one real node (containerd, kubelet, kube-proxy, "
        "CoreDNS) that runs pods as containers from the images of make images-local",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where pidfiles, logs, certs and kubeconfig live "
        "(default: $JOBGEN_LOCALCLUSTER_DIR or <cache>/localcluster/default)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds `up` may take (default 180; 600 with --real-node: importing the images)",
    )
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.state_dir or default_state_dir())
    try:
        if args.command == "bins":
            names = tuple(n for n in BINARIES if n != "kind")
            bins = ensure_binaries(names)
            for name in names:
                print(bins.path(name))
        elif args.command == "up":
            info = cluster.up(timeout=args.timeout or (600.0 if args.real_node else 180.0), real_node=args.real_node)
            print(info.kubeconfig)
        elif args.command == "import-images":
            running = cluster.info()
            if running is None or not running.real_node:
                print(
                    "localcluster: no real node is running; run: python -m jobgen.localcluster up --real-node",
                    file=sys.stderr,
                )
                return 1
            done = cluster.node.import_images(ensure_binaries(()))
            print(f"imported: {', '.join(done)}" if done else "all images up to date")
        elif args.command == "down":
            stopped = cluster.down()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "status":
            procs = cluster.processes()
            if not procs:
                print(f"local cluster is down ({cluster.state_dir})")
                return 1
            for name, ok in procs.items():
                print(f"{name:24} {'running' if ok else 'NOT RUNNING'}")
            up = cluster.is_up()
            print(f"apiserver {'ready' if up else 'NOT READY'}; kubeconfig {cluster.kubeconfig}")
            return 0 if up else 1
        elif args.command in ("env", "kubeconfig"):
            if cluster.info() is None:
                print(
                    "localcluster: the local cluster is not up; run: python -m jobgen.localcluster up", file=sys.stderr
                )
                return 1
            if args.command == "env":
                print(f"export KUBECONFIG={shlex.quote(str(cluster.kubeconfig))}")
            else:
                print(cluster.kubeconfig)
    except ClusterError as e:
        print(f"localcluster: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("localcluster: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
