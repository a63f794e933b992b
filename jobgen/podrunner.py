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
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from jobgen.errors import ClusterError
from jobgen.kube import ApiRejected, Cluster
from jobgen.kubeflow import JOB_NAME_LABEL, KINDS
from jobgen.localcluster import procs
from jobgen.localcluster.cluster import EXIT_CODE_ANNOTATION, RUN_FOR_ANNOTATION
from jobgen.localrun import LocalPorts, container_exit_code, local_argv, localize

LOCAL_EXEC_LABEL = "jobgen.io/local-exec"
BATCH_JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # on the pods of a batch/v1 Job
HOLD = "87600h"  # kwok keeps the pod Running until the exit-code annotation is set
DEFAULT_CONTAINERS = tuple(k.container for k in KINDS.values())


def pod_settings() -> tuple[dict[str, str], dict[str, str]]:
    """Pod labels and annotations that hand a job's pods to the runner."""
    return {LOCAL_EXEC_LABEL: "true"}, {RUN_FOR_ANNOTATION: HOLD}


def downward_env(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    """Env from the downward API's ``fieldRef`` to the pod's metadata, as the kubelet resolves it.

    The Job controller gives every pod of an Indexed Job ``JOB_COMPLETION_INDEX`` this way (from the
    annotation ``batch.kubernetes.io/job-completion-index``)."""
    out = {}
    meta = pod["metadata"]
    for e in container.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("fieldRef")
        if ref is None:
            continue
        path = ref["fieldPath"]
        if path.startswith("metadata.annotations['") and path.endswith("']"):
            value = (meta.get("annotations") or {}).get(path[len("metadata.annotations['") : -2])
        elif path.startswith("metadata.labels['") and path.endswith("']"):
            value = (meta.get("labels") or {}).get(path[len("metadata.labels['") : -2])
        else:
            value = {
                "metadata.name": meta.get("name"),
                "metadata.namespace": meta.get("namespace"),
                "metadata.uid": meta.get("uid"),
            }.get(path)
        if value is not None:
            out[e["name"]] = value
    return out


@dataclass
class Running:
    pod: str
    job: str
    process: subprocess.Popen[bytes]
    log: IO[bytes]


class PodRunner:
    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        log_dir: Path,
        echo: IO[str] | None = None,
        cwd: str | None = None,
        poll: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.log_dir = log_dir
        self.echo = echo
        self.cwd = cwd
        self.poll = poll
        self.running: dict[str, Running] = {}
        self.done: dict[str, int] = {}
        self.ports: dict[str, LocalPorts] = {}
        self.stop_event = threading.Event()
        self._lock = threading.Lock()  # one of step() and shutdown() at a time: both change `running`

    def _say(self, text: str) -> None:
        if self.echo is not None:
            print(text, file=self.echo, flush=True)

    def _pods(self) -> list[dict[str, Any]]:
        return self.cluster.list_objects("v1", "Pod", self.namespace, label_selector=f"{LOCAL_EXEC_LABEL}=true")

    def step(self) -> None:
        """One reconcile pass: start new Running pods, report exited processes, stop deleted pods."""
        with self._lock:
            if not self.stop_event.is_set():
                self._step()

    def _step(self) -> None:
        live = set()
        for pod in self._pods():
            name = pod["metadata"]["name"]
            live.add(name)
            if pod["metadata"].get("deletionTimestamp") is not None:
                continue
            if (
                (pod.get("status") or {}).get("phase") == "Running"
                and name not in self.running
                and name not in self.done
            ):
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

    def _start(self, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        labels = pod["metadata"].get("labels") or {}
        job = labels.get(JOB_NAME_LABEL) or labels.get(BATCH_JOB_NAME_LABEL, name)
        containers = pod["spec"]["containers"]
        container = next((c for c in containers if c["name"] in DEFAULT_CONTAINERS), containers[0])
        env = {e["name"]: e["value"] for e in container.get("env") or [] if e.get("value") is not None}
        env.update(downward_env(pod, container))  # e.g. JOB_COMPLETION_INDEX of an Indexed Job's pod
        env = {"HOSTNAME": name, **localize(env, self.ports.setdefault(job, LocalPorts()))}  # as the kubelet sets it
        argv = local_argv(list(container.get("command") or []), list(container.get("args") or []))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / f"{name}.log").open("ab")  # closed when the process ends
        if not argv:
            log.write(b"no command: the image's entrypoint is not known locally\n")
            log.close()
            self.done[name] = 127
            self._report(name, 127)
            return
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.cwd,
            start_new_session=True,
        )
        self.running[name] = Running(pod=name, job=job, process=process, log=log)
        self._say(f"  {name}: started pid {process.pid} (log {self.log_dir / (name + '.log')})")

    def _report(self, name: str, exit_code: int) -> None:
        patch = {"metadata": {"annotations": {EXIT_CODE_ANNOTATION: str(exit_code), RUN_FOR_ANNOTATION: "0s"}}}
        try:
            self.cluster.patch("v1", "Pod", name, self.namespace, patch)
        except (ApiRejected, ClusterError) as exc:  # the pod may be gone; nothing to report to
            self._say(f"  {name}: exited {exit_code}, pod not updated: {exc}")
            return
        self._say(f"  {name}: exited {exit_code}")

    @staticmethod
    def _kill(run: Running) -> None:
        procs.stop_group(run.process.pid, timeout=5.0)
        run.process.wait()
        run.log.close()

    def run(self) -> None:
        """Reconcile every `poll` seconds until shutdown. A pass that fails (the apiserver unreachable
        past the client's retries) is reported and the next pass tries again: pods keep running."""
        while not self.stop_event.is_set():
            try:
                self.step()
            except ClusterError as exc:
                self._say(f"  pod runner: {exc}; retrying in {self.poll}s")
            self.stop_event.wait(self.poll)

    def shutdown(self) -> None:
        """Stop the loop and every process it started (after the pass in progress, if any)."""
        self.stop_event.set()
        with self._lock:
            for run in list(self.running.values()):
                self._kill(run)
            self.running.clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobgen.podrunner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--namespace", default="training")
    parser.add_argument("--log-dir", type=Path, default=Path("pod-logs"))
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    args = parser.parse_args(argv)
    from jobgen import kube

    runner = PodRunner(kube.connect(None, args.kubeconfig), args.namespace, args.log_dir, echo=sys.stderr)
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
