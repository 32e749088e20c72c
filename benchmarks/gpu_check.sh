#!/usr/bin/env bash
# GPU check, under 5 minutes on one H100 once the environment is installed: the embedded pipeline on CUDA, then one
# FLAT step of ours against the reference formulation on a Llama-3.2-1B-shaped model (random init, bf16, 128k
# vocabulary): step time, peak memory and MFU. Run from anywhere; output to stdout (commit it as
# benchmarks/results/gpu_check.txt with the machine's name).
#
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
KEDRO=${KEDRO:-.venv/bin/kedro}
export KEDRO_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: install the CUDA build of torch (README, GPU machines)"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}")
PY

echo "== the embedded pipeline (the HF Trainer and the evaluation run on the GPU it finds)"
start=$(date +%s)
"$KEDRO" run --pipelines data_prep,templates,finetune,unlearn,evaluate > gpu_check_kedro.log 2>&1 \
  || { tail -40 gpu_check_kedro.log; exit 1; }
grep -E "finetune took|forget_quality =|model_utility =" gpu_check_kedro.log | sed 's/  */ /g'
echo "kedro run: $(( $(date +%s) - start )) s"

echo "== one FLAT step, Llama-3.2-1B shape, bf16"
"$PYTHON" benchmarks/bench_flat_step.py --model llama-3.2-1b --device cuda --dtype bfloat16 --steps 5
