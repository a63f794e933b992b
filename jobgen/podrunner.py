"""Run the containers of local-cluster pods as real local processes, and report their outcome.

On the local control plane kwok plays the kubelet, so pods run nothing. For pods labelled
``jobgen.io/local-exec=true`` (and annotated ``localcluster.jobgen.io/run-for: 87600h`` so kwok keeps
them Running), this runner starts each Running pod's default container as a local process with
the env that the real training-operator put into the pod (addresses mapped to 127.0.0.1, see
:func:`jobgen.localrun.localize`). When the process exits, it sets the pod's exit-code annotation,
and kwok moves the pod to Succeeded or Failed with that code; the operator then updates the job.
So pod phases and job states follow what the processes really did.

    python -m jobgen.podrunner [-n training] [--log-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from jobgen.localcluster.cluster import EXIT_CODE_ANNOTATION, RUN_FOR_ANNOTATION
from jobgen.localrun import LocalPorts, container_exit_code, local_argv, localize

LOCAL_EXEC_LABEL = "jobgen.io/local-exec"
HOLD = "87600h"  # kwok keeps the pod Running until the exit-code annotation is set
DEFAULT_CONTAINERS = ("pytorch", "tensorflow")


def pod_settings() -> tuple[dict[str, str], dict[str, str]]:
    """Pod labels and annotations that hand a job's pods to the runner."""
    return {LOCAL_EXEC_LABEL: "true"}, {RUN_FOR_ANNOTATION: HOLD}


def downward_env(pod: Any, container: Any) -> dict[str, str]:
    """Env from the downward API's ``fieldRef`` to the pod's metadata, as the kubelet resolves it.

    The Job controller gives every pod of an Indexed Job ``JOB_COMPLETION_INDEX`` this way (from the
    annotation ``batch.kubernetes.io/job-completion-index``)."""
    out = {}
    meta = pod.metadata
    for e in container.env or []:
        ref = e.value_from.field_ref if e.value_from is not None else None
        if ref is None:
            continue
        path = ref.field_path
        if path.startswith("metadata.annotations['") and path.endswith("']"):
            value = (meta.annotations or {}).get(path[len("metadata.annotations['"):-2])
        elif path.startswith("metadata.labels['") and path.endswith("']"):
            value = (meta.labels or {}).get(path[len("metadata.labels['"):-2])
        else:
            value = {"metadata.name": meta.name, "metadata.namespace": meta.namespace,
                     "metadata.uid": meta.uid}.get(path)
        if value is not None:
            out[e.name] = value
    return out


@dataclass
class Running:
    pod: str
    job: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


class PodRunner:
    def __init__(self, core: Any, namespace: str, log_dir: Path, echo: IO[str] | None = None,
                 cwd: str | None = None, poll: float = 0.5) -> None:
        self.core = core  # kubernetes.client.CoreV1Api
        self.namespace = namespace
        self.log_dir = log_dir
        self.echo = echo
        self.cwd = cwd
        self.poll = poll
        self.running: dict[str, Running] = {}
        self.done: dict[str, int] = {}
        self.ports: dict[str, LocalPorts] = {}
        self.stop_event = threading.Event()

    def _say(self, text: str) -> None:
        if self.echo is not None:
            print(text, file=self.echo, flush=True)

    def _pods(self) -> list[Any]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=f"{LOCAL_EXEC_LABEL}=true").items

    def step(self) -> None:
        """One reconcile pass: start new Running pods, report exited processes, stop deleted pods."""
        live = set()
        for pod in self._pods():
            name = pod.metadata.name
            live.add(name)
            if pod.metadata.deletion_timestamp is not None:
                continue
            if pod.status.phase == "Running" and name not in self.running and name not in self.done:
                self._start(pod)
        for name, run in list(self.running.items()):
            code = run.process.poll()
            if name not in live:
                self._kill(run)
                del self.running[name]
                continue
            if code is not None:
                run.log.close()
                exit_code = container_exit_code(code)
                self.done[name] = exit_code
                del self.running[name]
                self._report(name, exit_code)

    def _start(self, pod: Any) -> None:
        name = pod.metadata.name
        labels = pod.metadata.labels or {}
        job = labels.get("training.kubeflow.org/job-name") or labels.get("batch.kubernetes.io/job-name", name)
        containers = [c for c in pod.spec.containers if c.name in DEFAULT_CONTAINERS] or pod.spec.containers
        container = containers[0]
        env = {e.name: e.value for e in container.env or [] if e.value is not None}
        env.update(downward_env(pod, container))  # e.g. JOB_COMPLETION_INDEX of an Indexed Job's pod
        env = {"HOSTNAME": name, **localize(env, self.ports.setdefault(job, LocalPorts()))}  # as the kubelet sets it
        argv = local_argv(list(container.command or []), list(container.args or []))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process ends
        if not argv:
            log.write(b"no command: the image's entrypoint is not known locally\n")
            log.close()
            self.done[name] = 127
            self._report(name, 127)
            return
        process = subprocess.Popen(argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
        self.running[name] = Running(pod=name, job=job, process=process, log=log)
        self._say(f"  {name}: started pid {process.pid} (log {self.log_dir / (name + '.log')})")

    def _report(self, name: str, exit_code: int) -> None:
        patch = {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(exit_code), RUN_FOR_ANNOTATION: "0s"}}}
        try:
            self.core.patch_namespaced_pod(name, self.namespace, patch)
        except Exception as exc:  # noqa: BLE001 - the pod may be gone; nothing to report to
            self._say(f"  {name}: exited {exit_code}, pod not updated: {exc}")
            return
        self._say(f"  {name}: exited {exit_code}")

    @staticmethod
    def _kill(run: Running) -> None:
        try:
            os.killpg(run.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        run.process.wait()
        run.log.close()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.step()
            self.stop_event.wait(self.poll)

    def shutdown(self) -> None:
        """Stop the loop and every process it started."""
        self.stop_event.set()
        for run in list(self.running.values()):
            self._kill(run)
        self.running.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobgen.podrunner", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--namespace", default="training")
    parser.add_argument("--log-dir", type=Path, default=Path("pod-logs"))
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    args = parser.parse_args(argv)
    from kubernetes import client

    from jobgen import kube

    cluster = kube.connect(None, args.kubeconfig)
    runner = PodRunner(client.CoreV1Api(cluster.api), args.namespace, args.log_dir, echo=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop_event.set())
    try:
        runner.run()
    except KeyboardInterrupt:
        pass
    finally:
        runner.shutdown()
    print(json.dumps(runner.done), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
