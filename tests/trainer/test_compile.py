"""`--compile=true`: torch.compile (Inductor) on CPU, with the host's C++ compiler, trains the same
steps as eager mode. Dropout is off: Inductor draws dropout masks from its own RNG, so with dropout
the two runs sample different masks (a difference of randomness, not of arithmetic)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.trainer.conftest import child_env, require_torch, trainer_cmd

require_torch()

ARGS = (
    "--max-steps=4",
    "--epochs=1",
    "--log-every=1",
    "--device=cpu",
    "--dropout=0",
    "--data-uri=",
    "--output-uri=",
    "--checkpoint-uri=",
)
LOSS = re.compile(r"^step (\d+) epoch \d+ loss ([0-9.]+) ", re.M)


def losses(tmp_path, *extra: str) -> dict[int, float]:
    # A cache of its own: a warm Inductor cache from an earlier run would skip the compile under test.
    env = child_env({}, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    proc = subprocess.run(trainer_cmd(*ARGS, *extra), env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = {int(s): float(v) for s, v in LOSS.findall(proc.stdout)}
    assert sorted(found) == [1, 2, 3, 4], proc.stdout[-2000:]
    return found


def test_compiled_training_takes_the_same_steps_as_eager(tmp_path):
    if shutil.which("g++") is None:
        pytest.fail("g++ is not installed: torch.compile on CPU needs a C++ compiler", pytrace=False)
    eager = losses(tmp_path)
    compiled = losses(tmp_path, "--compile=true")
    assert compiled == pytest.approx(eager, rel=1e-3, abs=1e-3)
    assert list((tmp_path / "inductor").rglob("*.so")) or list((tmp_path / "inductor").rglob("*.py")), (
        "Inductor wrote no generated code: the model was not compiled"
    )
