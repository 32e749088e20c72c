#!/usr/bin/env bash
# The tuned leaderboard on SmolLM2-135M-Instruct (benchmarks/results/tuned_leaderboard_smollm2.md): the environment's
# run (base model, templates, original and retain models, their evaluations) unless --skip-run, then two tune workers
# of one torch thread each on our 2 cores, then the report. Prints the wall time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEDRO_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { local start=$SECONDS; "$@"; echo "$* : $((SECONDS - start)) s" >&2; }
[[ "${1:-}" == "--skip-run" ]] || step .venv/bin/kedro run --env smollm2
workers() {
  for worker in 0 1; do
    .venv/bin/kedro run --env smollm2 --pipelines tune_worker --params "tune.worker=$worker,tune.num_threads=1" \
      > "data/smollm2/08_reporting/tune_worker_$worker.log" 2>&1 &
  done
  wait
}
step workers
step .venv/bin/kedro run --env smollm2 --pipelines tune_report
