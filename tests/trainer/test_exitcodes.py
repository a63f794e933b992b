"""One test per row of the exit-code table (docs/trainer.md#exit-codes), on real processes."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.trainer.conftest import require_torch

torch = require_torch()

from trainer import data, exitcodes, launch  # noqa: E402

from tests.trainer.conftest import child_env, free_port, operator_pod_env, run_all, trainer_cmd  # noqa: E402

SMALL = ["--epochs=1", "--batch-size=32", "--hidden=16", "--backend=gloo", "--log-every=1"]


@pytest.fixture
def dataset(bucket: str) -> str:
    arrays, classes = data.synthetic(seed=0, n=1024)
    uri = f"gs://{bucket}/data/small"
    data.write_dataset(uri, arrays, classes, shards=4, val_shards=1, val_fraction=0.2)
    return uri


def run(args, env, timeout=180):
    return subprocess.run(trainer_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_row_0_done():
    p = run([*SMALL, "--max-steps=3"], child_env({}))
    assert p.returncode == exitcodes.OK, p.stderr[-2000:]


def test_row_1_a_bug_exits_1_with_its_traceback():
    p = run([*SMALL, "--model=tests.trainer.hooks:buggy"], child_env({}))
    assert p.returncode == exitcodes.BUG
    assert "Traceback" in p.stderr and "ZeroDivisionError: a bug in the user's model code" in p.stderr
    assert not exitcodes.retryable(p.returncode)


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--lr=-1"], {}, "argument --lr: must be > 0, got -1"),
        (
            [],
            {"PET_NNODES": "3", "PET_NPROC_PER_NODE": "1"},
            "PET_NNODES=3 but neither MASTER_ADDR nor PET_RDZV_ENDPOINT is set",
        ),
        ([], {"JOBGEN_HYPERPARAMETERS": "{not json"}, "JOBGEN_HYPERPARAMETERS is not valid JSON"),
        (["--width=8"], {}, "unrecognized arguments: --width=8"),
    ],
)
def test_row_2_bad_input_exits_2_with_one_line(argv, env, message):
    p = run([*SMALL, *argv], child_env({}, **env))
    assert p.returncode == exitcodes.USAGE, p.stderr[-2000:]
    assert message in p.stderr and "Traceback" not in p.stderr
    assert not exitcodes.retryable(p.returncode)


def test_row_2_incompatible_resume_is_refused_unless_asked(bucket, dataset, gcs_env):
    env = child_env(gcs_env, DATA_URI=dataset, CHECKPOINT_URI=f"gs://{bucket}/ck/a")
    p = run([*SMALL, "--lr=0.1", "--max-steps=4", "--checkpoint-every=2"], env)
    assert p.returncode == 0, p.stderr[-2000:]
    p = run([*SMALL, "--lr=0.2", "--max-steps=6"], env)
    assert p.returncode == exitcodes.USAGE
    assert "the checkpoint was written by a different run: lr: checkpoint 0.1, now 0.2" in p.stderr
    assert "--allow-resume-changes" in p.stderr and "Traceback" not in p.stderr
    p = run([*SMALL, "--lr=0.2", "--max-steps=6", "--allow-resume-changes=true"], env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "resumed from checkpoint step 4" in p.stderr


def test_row_3_gpu_job_without_usable_cuda_fails_at_start():
    assert not torch.cuda.is_available()  # this machine: a CPU build / no GPU
    p = run([*SMALL, "--device=cuda"], child_env({}))
    assert p.returncode == exitcodes.NO_CUDA, p.stderr[-2000:]
    line = next(ln for ln in p.stderr.splitlines() if "error:" in ln)
    assert "CUDA is not usable" in line and f"torch {torch.__version__} is built for CUDA" in line
    assert "node driver" in line and "Traceback" not in p.stderr and "step " not in p.stdout


def test_row_3_auto_device_refuses_cpu_fallback_in_a_gpu_pod(monkeypatch):
    from trainer import device

    monkeypatch.setattr(device, "pod_has_gpu", lambda: True)  # /dev/nvidia0 present, CUDA unusable
    with pytest.raises(exitcodes.CudaUnavailable, match="the pod has an NVIDIA GPU"):
        device.select("auto")
    monkeypatch.setattr(device, "pod_has_gpu", lambda: False)
    assert device.select("auto").type == "cpu"


def test_row_138_storage_unreachable_after_retries_is_transient(bucket, gcs_env, dataset):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: connection refused on every retry
    env = child_env({**gcs_env, "STORAGE_EMULATOR_HOST": dead, "STORAGE_RETRY_SECONDS": "8"}, DATA_URI=dataset)
    p = run(SMALL, env)
    assert p.returncode == exitcodes.TRANSIENT, p.stderr[-2000:]
    assert "transient failure, exit 138" in p.stderr
    assert p.stderr.count("failed (ConnectionError") >= 2, p.stderr[-2000:]  # retried, then given up
    assert exitcodes.retryable(p.returncode)


def test_row_138_lost_peer_is_transient(gcs_env):
    """Two pods; one is SIGKILLed mid-training (node lost): the survivor's collective fails -> 138."""
    port = free_port()
    args = [*SMALL, "--epochs=50", "--stop-check-every=1"]
    procs = [
        subprocess.Popen(
            trainer_cmd(*args),
            env=child_env({}, **operator_pod_env(r, 2, port)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    assert procs[0].stdout is not None
    for line in procs[0].stdout:
        if line.startswith("step 5 "):
            procs[1].kill()
            break
    [(rc0, _, err0), (rc1, _, _)] = run_all(procs, timeout=180)
    assert rc1 == -signal.SIGKILL
    assert rc0 == exitcodes.TRANSIENT, err0[-3000:]
    assert "transient failure, exit 138" in err0


def test_row_143_sigterm_after_checkpoint(bucket, dataset, gcs_env):
    env = child_env(gcs_env, DATA_URI=dataset, CHECKPOINT_URI=f"gs://{bucket}/ck/t")
    p = subprocess.Popen(
        trainer_cmd(*SMALL, "--epochs=50", "--stop-check-every=1"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    for line in p.stdout:
        if line.startswith("step 3 "):
            p.send_signal(signal.SIGTERM)
            break
    _, err = p.communicate(timeout=120)
    assert p.returncode == exitcodes.PREEMPTED, err[-2000:]
    assert "checkpoint step" in err and "(SIGTERM)" in err


@pytest.mark.parametrize(
    "agent_rc, codes, signalled, expected",
    [
        (0, [0, 0], False, 0),
        (1, [0, 143], True, 143),  # preempted: whatever the agent says
        (1, [2, 0], False, 2),
        (1, [3, 3], False, 3),
        (1, [138, 1], False, 138),
        (1, [143, 143], False, 143),
        (1, [1, 0], False, 1),
        (1, [], False, 138),  # workers killed by a signal / rendezvous failure: retry
    ],
)
def test_supervisor_combines_worker_codes(agent_rc, codes, signalled, expected):
    assert launch.combine(agent_rc, codes, signalled) == expected


def test_classify():
    from google.api_core import exceptions as gexc

    assert exitcodes.classify(gexc.ServiceUnavailable("503")) == 138
    assert exitcodes.classify(gexc.Forbidden("403")) == 1
    assert exitcodes.classify(RuntimeError("[../third_party/gloo/...] Connection closed by peer")) == 138
    assert exitcodes.classify(RuntimeError("NCCL error: unhandled system error")) == 138
    assert exitcodes.classify(RuntimeError("shape mismatch")) == 1
    assert exitcodes.classify(exitcodes.TrainerError("bad")) == 2
    assert exitcodes.classify(exitcodes.CudaUnavailable("x")) == 3


def test_torchrun_alone_turns_sigterm_into_a_permanent_code(tmp_path):
    """Why the supervisor exists: torchrun's agent exits 1 on SIGTERM (not retried by ExitCode)."""
    import sys

    ready = tmp_path / "ready"
    script = tmp_path / "sleep.py"
    script.write_text(f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\nwhile True:\n    time.sleep(1)\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=1", str(script)]
    p = subprocess.Popen(cmd, env=child_env({}), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not ready.exists():  # the worker runs: the agent has its signal handlers
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-1500:]
        time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1 and not exitcodes.retryable(p.returncode), (p.returncode, err[-1500:])
    assert "SignalException" in err or "Received 15 death signal" in err or "Signals.SIGTERM" in err


def test_custom_hyperparameter_reaches_the_model_hook_typed():
    env = child_env({}, JOBGEN_HYPERPARAMETERS=json.dumps({"width": {"type": "int", "value": 8}}))
    p = run([*SMALL, "--max-steps=2", "--model=tests.trainer.hooks:custom", "--width=12"], env)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "custom width 12 int" in p.stdout
    p = run([*SMALL, "--max-steps=2", "--model=tests.trainer.hooks:custom", "--width=wide"], env)
    assert p.returncode == 2 and "hyperparameter width: expected an int, got 'wide'" in p.stderr
