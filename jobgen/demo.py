"""`make demo`: the local render → validate → submit → status flow, with no cloud account or Docker.

    python -m jobgen.demo [--spec jobs/cpu-ddp.yaml] [--timeout 180]

It validates the example specs, starts (or reuses) the local control plane, submits the CPU DDP job
with server-side apply, and follows its status until it finishes. Each step runs the same `jobgen`
command a user would type, and prints it. Pods on the local control plane are simulated by kwok: the
scheduler and the training-operator are real, the containers are not run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _step(n: int, total: int, title: str) -> None:
    print(f"\n\033[1m[{n}/{total}] {title}\033[0m", flush=True)


def _run(args: list[str], env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    print(f"$ jobgen {shlex.join(args)}", flush=True)
    proc = subprocess.run([sys.executable, "-m", "jobgen.cli", *args], env=env, cwd=REPO, text=True,
                          capture_output=True)
    if proc.stdout:
        print(proc.stdout, end="", flush=True)
    if proc.stderr:
        print(proc.stderr, end="", file=sys.stderr, flush=True)
    if check and proc.returncode != 0:
        raise SystemExit(proc.returncode)
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgen.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="jobs/cpu-ddp.yaml", help="the job spec to run")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the job to finish")
    args = parser.parse_args(argv)

    from jobgen.loader import load_spec
    from jobgen.localcluster import ClusterError, LocalCluster, default_state_dir

    total = 4
    _step(1, total, "Validate every example spec offline (CRD schema, pod schema, webhook rules)")
    env = dict(os.environ)
    _run(["validate", *sorted(str(p.relative_to(REPO)) for p in (REPO / "jobs").glob("*.yaml"))], env)
    spec = load_spec(REPO / args.spec)

    _step(2, total, "Start the local control plane: etcd, kube-apiserver (RBAC), scheduler, controller-manager, "
                    "training-operator v1.9.4, kwok GPU nodes")
    try:
        info = LocalCluster(default_state_dir()).up()
    except ClusterError as exc:
        print(f"error: the local control plane did not start: {exc}", file=sys.stderr)
        return 1
    env["KUBECONFIG"] = str(info.kubeconfig)

    _step(3, total, f"Submit {args.spec} with server-side apply")
    if _state(spec.name, spec.namespace, env) is not None:
        _run(["delete", spec.name, "-n", spec.namespace], env)  # start clean, so a rerun shows the whole run
        _wait_gone(spec.name, spec.namespace, env, args.timeout)
    _run(["submit", args.spec], env)

    _step(4, total, "Follow the job until it finishes")
    state = _follow(spec.name, spec.namespace, env, args.timeout)
    _run(["status", spec.name, "-n", spec.namespace], env)

    print("\nNext:")
    print(f"  export KUBECONFIG={shlex.quote(str(info.kubeconfig))}")
    print(f"  kubectl get pytorchjobs -n {spec.namespace}")
    print(f"  jobgen status -n {spec.namespace}")
    print("  make local-cluster-down          # stop the local control plane")
    print("Pods here are simulated by kwok (no containers run); the scheduler and the training-operator are real.")
    return 0 if state == "Succeeded" else 1


def _state(name: str, namespace: str, env: dict[str, str]) -> str | None:
    import json

    proc = subprocess.run([sys.executable, "-m", "jobgen.cli", "status", name, "-n", namespace, "-o", "json"],
                          env=env, cwd=REPO, text=True, capture_output=True)
    return json.loads(proc.stdout)["state"] if proc.returncode == 0 else None


def _wait_gone(name: str, namespace: str, env: dict[str, str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _state(name, namespace, env) is not None and time.monotonic() < deadline:
        time.sleep(0.5)


def _follow(name: str, namespace: str, env: dict[str, str], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    last = None
    start = time.monotonic()
    while time.monotonic() < deadline:
        state = _state(name, namespace, env)
        if state != last:
            print(f"  {time.monotonic() - start:5.1f}s  {name}: {state}", flush=True)
            last = state
        if state in ("Succeeded", "Failed"):
            return state
        time.sleep(0.5)
    print(f"error: {name} did not finish within {timeout:.0f}s", file=sys.stderr)
    return last


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; the local control plane keeps running: make local-cluster-down", file=sys.stderr)
        sys.exit(130)
