#!/usr/bin/env bash
# GPU checks of the trainer that cannot run on the CPU-only development machines and CI:
#   1 GPU:  python -m trainer.train --device=cuda --precision=bf16 (ResNet-18 of the BYO example, in-memory
#           data): steps/s, then SIGTERM mid-run -> the exit code (expected 143)
#   N GPUs: the same as one pod with nprocPerNode=N (NCCL DDP through the trainer's torchrun supervisor)
# Where there is no usable GPU it says why and exits 0 without running anything.
#   usage: bench/gpu.sh [STEPS]   (from the repository root; uses .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${1:-200}

if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "bench/gpu.sh: not run: no nvidia-smi on this machine (no NVIDIA driver; no GPU)"; exit 0
fi
if ! gpus=$("$PY" -c 'import torch; assert torch.cuda.is_available(), torch.version.cuda; print(torch.cuda.device_count())' 2>&1); then
  echo "bench/gpu.sh: not run: torch cannot use CUDA here: ${gpus##*$'\n'}"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true; exit 0
fi
echo "GPUs: $gpus"; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "capability", torch.cuda.get_device_capability())'

export PYTHONPATH="$PWD/bench:$PWD/examples/byo_resnet:$PWD/images/trainer/src${PYTHONPATH:+:$PYTHONPATH}"
ARGS=(--device=cuda --precision=bf16 --batch-size=128 --epochs=1000 --max-steps="$STEPS" --log-every=10
      --model=trainer_bench:resnet_hook --batch-fn=gpu_data:batch --workers=4 --stop-check-every=1)
# No DATA_URI: the trainer's generated data set (32 features) in memory, each record broadcast to a
# 3x32x32 image by the batch hook below, so the GPU sees ResNet-18's real work without any download.
cat > /tmp/gpu_data.py <<'PY'
import numpy as np, torch
def batch(b):
    x = torch.from_numpy(np.ascontiguousarray(b["x"], dtype=np.float32)).view(-1, 1, 1, 32).expand(-1, 3, 32, 32)
    return x.contiguous(), torch.from_numpy(b["y"].astype(np.int64))
PY
export PYTHONPATH="/tmp:$PYTHONPATH"

run() {  # $1: label, $2: nproc; env for one pod of a PyTorchJob with nprocPerNode=$2
  local label=$1 nproc=$2 log=/tmp/gpu-$1.log
  env PET_NPROC_PER_NODE="$nproc" "$PY" -m trainer.train "${ARGS[@]}" >"$log" 2>&1 &
  local pid=$!
  while ! grep -q "^step $((STEPS / 2)) " "$log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { echo "$label: exited early"; tail -20 "$log"; return 1; }; sleep 1
  done
  local t0 s0; t0=$(date +%s.%N); s0=$(grep -c '^step ' "$log")
  sleep 20
  local t1 s1; t1=$(date +%s.%N); s1=$(grep -c '^step ' "$log")
  kill -TERM $pid; set +e; wait $pid; local rc=$?; set -e
  echo "$label: $(echo "($s1 - $s0) * 10 / ($t1 - $t0)" | bc -l | cut -c1-6) steps/s (batch 128/GPU, bf16), exit code on SIGTERM: $rc (expected 143)"
}
run gpu1 1
if [ "$gpus" -gt 1 ]; then run "nccl-ddp-$gpus" "$gpus"; fi
