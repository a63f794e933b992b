"""``python -m jobgen.demo``: the outline, one step per line (see jobgen/demo/__init__.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

from jobgen import demo
from jobgen.demo import report
from jobgen.demo.infra import World, down
from jobgen.demo.predictions import predict_after_promotion
from jobgen.demo.retrain import Retrain
from jobgen.demo.settings import BUCKETS, METRIC, NAMESPACE, PREFIX
from jobgen.demo.ui import DemoError, say, step


@dataclass
class Step:
    title: str
    run: Callable[[], None]


def data_version_lands(retrain: Retrain, version: str, fraction: float, seed: int) -> None:
    """Write the version, follow the job the watcher creates, read what the registry decided."""
    run = retrain.land(version, fraction, seed=seed)
    retrain.follow(run)
    latest = retrain.read_registry(run)
    if run.state != "Succeeded":
        raise DemoError(f"{run.job} {run.state}; pod logs in {retrain.state / 'pod-logs'}")
    verdict = (
        "promoted to LATEST"
        if run.promoted
        else (
            f"not promoted: LATEST stays {latest.get('version')} ({METRIC} {latest.get('value'):.4f})"
            if latest
            else "not promoted"
        )
    )
    say(f"  model {run.model_version}: {METRIC} {run.metric:.4f}, {verdict}")


def summarize(retrain: Retrain, world: World) -> None:
    say(report.summary(retrain.runs))
    png = report.plot(retrain.runs, world)
    say(f"\ntraining curves: {png}  (also gs://{BUCKETS['models']}/{PREFIX}/curves.png)")


def outline(world: World, retrain: Retrain, timeout: float = 300.0) -> list[Step]:
    data = f"gs://{BUCKETS['data']}/{PREFIX}"
    return [
        Step("Start the emulators: fake-gcs-server (GCS) and gcloud's Pub/Sub emulator", world.start_emulators),
        Step(
            "Start the local control plane: kube-apiserver (RBAC), etcd, scheduler, controller-manager, "
            "training-operator v1.9.4, kwok nodes",
            world.start_cluster,
        ),
        Step("Start the retraining watcher and the pod runner", world.start_watcher),
        Step(f"A first data version lands: {data}/v1/", lambda: data_version_lands(retrain, "v1", 0.25, seed=4)),
        Step(
            f"A second, larger data version lands: {data}/v2/", lambda: data_version_lands(retrain, "v2", 1.0, seed=5)
        ),
        Step(
            f"An input batch lands: predictions with the promoted model (gs://{BUCKETS['inputs']}/{PREFIX}/batch-1/)",
            lambda: predict_after_promotion(world, timeout),
        ),
        Step("Summary", lambda: summarize(retrain, world)),
    ]


def _cluster_kind() -> str | None:
    """'local' or 'kind', or None after printing why the choice cannot run."""
    choice = os.environ.get("DEMO_CLUSTER", "local")
    if choice not in ("local", "kind"):
        say(f"error: DEMO_CLUSTER={choice!r}; expected local (default) or kind")
        return None
    if choice == "kind" and (
        shutil.which("docker") is None
        or subprocess.run(["docker", "info"], capture_output=True, check=False).returncode
    ):
        say(
            "error: DEMO_CLUSTER=kind needs a running Docker engine ('docker info' failed); "
            "without Docker, run `make demo` (the local control plane)"
        )
        return None
    return choice


def next_steps(world: World) -> None:
    say("\nNext:")
    say("  source .venv/bin/activate")
    say(f"  export KUBECONFIG={shlex.quote(os.environ['KUBECONFIG'])}")
    say(f"  kubectl get pytorchjobs -n {NAMESPACE}          # the two retrains")
    say(f"  kubectl get jobs.batch -n {NAMESPACE}            # the prediction Job (Indexed)")
    say(f"  jobgen status -n {NAMESPACE}")
    say(f"  eval $(python -m jobgen.emulators env --state-dir {shlex.quote(str(world.state / 'emulators'))})")
    say(
        f"  python -c \"from trainer.registry import Registry; print(Registry('gs://{BUCKETS['models']}/{PREFIX}')"
        '.latest()[0])"'
    )
    say("  make demo-down                                  # stop the local cluster and the emulators")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobgen.demo", description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", nargs="?", choices=["run", "down"], default="run")
    parser.add_argument("--fast", action="store_true", help="fewer epochs per model (CI)")
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds each retrain (and the prediction) may take"
    )
    args = parser.parse_args(argv)
    if args.command == "down":
        return down()
    cluster_kind = _cluster_kind()
    if cluster_kind is None:
        return 2
    world = World(args.fast, kind=cluster_kind == "kind")
    steps = outline(world, Retrain(world, args.timeout), args.timeout)
    interrupted = False
    try:
        for n, s in enumerate(steps, start=1):
            step(n, len(steps), s.title)
            s.run()
    except KeyboardInterrupt:
        interrupted = True
        say("\ninterrupted: stopping everything the demo started")
    except DemoError as exc:
        say(f"\nerror: {exc}")
        return 1
    finally:
        world.stop_ours()
        if interrupted:
            down()
    if interrupted:
        return 130
    next_steps(world)
    return 0


if __name__ == "__main__":
    sys.exit(main())
