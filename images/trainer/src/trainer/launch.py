"""Run a training script in a PyTorchJob pod with the exit-code contract of :mod:`trainer.exitcodes`.

``python -m trainer.launch [-m module | script.py] [args...]`` is the container command for a
bring-your-own script (``python -m trainer.train`` does the same for the built-in trainer):

- one process per pod (or already under torchrun): the script runs in this process;
- ``nprocPerNode`` > 1 (``gpu``/``auto`` with several GPUs, or a number) or an ``elasticPolicy``: this
  process becomes a **supervisor** that starts ``python -m torch.distributed.run`` as a child.

Why a supervisor and not ``exec torchrun``: torchrun's agent turns a SIGTERM into a ``SignalException``
and exits **1**, a code the operator's ExitCode policy treats as permanent, so the first spot
preemption would fail the job. The supervisor instead keeps PID 1's SIGTERM to itself, forwards it
to the worker processes only (they checkpoint and exit 143), then stops the agent, and exits with
the code the workers reported through ``TRAINER_EXIT_DIR`` (see :func:`combine`).

Inside the workers, :func:`run` wraps the user's ``main``: it maps an exception to its exit code
(one line on stderr for user errors, a traceback for bugs) and records the code for the supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from trainer import env, exitcodes
from trainer.gcs import TrainerError

log = logging.getLogger("trainer")

EXIT_DIR = "TRAINER_EXIT_DIR"


# ---------------------------------------------------------------------------------------------
# In a worker


def record_exit(code: int) -> None:
    """Tell the supervisor (if any) how this worker ends."""
    where = os.environ.get(EXIT_DIR)
    if not where:
        return
    rank = os.environ.get("RANK", "0")
    with contextlib.suppress(OSError):
        Path(where, f"rank-{rank}.code").write_text(str(code))


def exit_code(fn: Callable[[], int | None], prog: str) -> int:
    """Call ``fn`` and turn how it ended into an exit code of the contract (printing why)."""
    try:
        rc = fn()
        code = 0 if rc is None else int(rc)
    except SystemExit as exc:  # argparse errors (2), sys.exit(n) in user code
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else exitcodes.USAGE)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(f"{prog}: error: {exc.code}", file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:
        code = exitcodes.classify(exc)
        if code in (exitcodes.USAGE, exitcodes.NO_CUDA):
            print(f"{prog}: error: {exc}", file=sys.stderr)
        elif code == exitcodes.TRANSIENT:
            print(
                f"{prog}: transient failure, exit {code} so that the operator retries: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
        else:
            traceback.print_exc()
    return code


def run(main: Callable[[], int | None], prog: str | None = None) -> NoReturn:
    """``trainer.launch.run(main)`` at the bottom of a training script: exit codes of the contract."""
    prog = prog or Path(sys.argv[0]).name
    code = exit_code(main, prog)
    record_exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


# ---------------------------------------------------------------------------------------------
# The supervisor


def combine(agent_rc: int, worker_codes: list[int], signalled: bool) -> int:
    """The pod's exit code from torchrun's and the workers' (the table in docs/trainer.md).

    - a SIGTERM/SIGINT reached the pod: 143 (preempted; the workers checkpointed);
    - torchrun succeeded: 0;
    - a worker reported a permanent user/config error (2, 3): that code;
    - a worker reported a retryable code (143, 138, ...): the highest;
    - a worker reported another code (1: a bug): that code;
    - torchrun failed and no worker reported (killed by a signal, rendezvous failure): 138.
    """
    if signalled:
        return exitcodes.PREEMPTED
    if agent_rc == 0:
        return 0
    permanent = [c for c in worker_codes if c in (exitcodes.USAGE, exitcodes.NO_CUDA)]
    if permanent:
        return min(permanent)
    retry = [c for c in worker_codes if exitcodes.retryable(c)]
    if retry:
        return exitcodes.PREEMPTED if exitcodes.PREEMPTED in retry else max(retry)
    failed = [c for c in worker_codes if c != 0]
    if failed:
        return max(failed)
    return exitcodes.TRANSIENT


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def supervise(cmd: list[str], poll: float = 0.1) -> int:
    """Run ``cmd`` (torchrun), forwarding SIGTERM/SIGINT to its workers; the contract's exit code."""
    exit_dir = tempfile.mkdtemp(prefix="trainer-exit-")
    child_env = {**os.environ, EXIT_DIR: exit_dir}
    proc = subprocess.Popen(cmd, env=child_env)
    state: dict[str, Any] = {"signum": None, "workers": [], "at": 0.0}

    def forward(signum: int, _frame: Any) -> None:
        if state["signum"] is None:
            state["signum"], state["at"] = signum, time.monotonic()
            state["workers"] = _children(proc.pid)
            log.warning(
                "signal %d: forwarding it to the %d training processes (not to torchrun's agent)",
                signum,
                len(state["workers"]),
            )
        for pid in state["workers"]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    stopped_agent = False
    try:
        while proc.poll() is None:
            time.sleep(poll)
            if state["signum"] is not None and not stopped_agent and not any(_alive(p) for p in state["workers"]):
                # The workers have checkpointed and exited: stop the agent before it restarts them.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                stopped_agent = True
        rc = proc.returncode
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    codes = []
    for f in sorted(Path(exit_dir).glob("rank-*.code")):
        with contextlib.suppress(ValueError, OSError):
            codes.append(int(f.read_text()))
        f.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        Path(exit_dir).rmdir()
    code = combine(rc, codes, state["signum"] is not None)
    log.info("torchrun exited %d; workers reported %s; exit %d", rc, codes or "nothing", code)
    return code


def relaunch_if_needed(target: list[str], args: list[str]) -> int | None:
    """Under the operator's env with several processes per pod: run ``target`` under torchrun and
    return the contract's exit code. Otherwise None: the caller runs in this process."""
    dist = env.resolve()
    if dist.mode != "launch":
        return None
    cmd = env.torchrun_argv(dist, target, args)
    log.info("PET_NPROC_PER_NODE=%s: running under torchrun: %s", dist.local_world_size, " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    return supervise(cmd)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [launch] %(message)s", stream=sys.stderr)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        print("usage: python -m trainer.launch [-m module | script.py] [args...]", file=sys.stderr)
        return exitcodes.USAGE
    target, args = (argv[:2], argv[2:]) if argv[0] == "-m" else (argv[:1], argv[1:])
    if target[0] != "-m" and not Path(target[0]).is_file():
        print(f"python -m trainer.launch: error: no such script: {target[0]}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        code = relaunch_if_needed(target, args)
    except TrainerError as exc:
        print(f"python -m trainer.launch: error: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    if code is not None:
        return code
    # One process per pod, or already under torchrun: run the target here.
    sys.argv = [target[-1], *args]

    def here() -> int | None:
        if target[0] == "-m":
            runpy.run_module(target[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target[0], run_name="__main__")
        return 0

    code = exit_code(here, Path(target[-1]).name)
    record_exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
