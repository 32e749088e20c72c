#!/usr/bin/env bash
# The tuned leaderboard of the default world (benchmarks/results/tuned_leaderboard_default_world.md): the default run
# (original and retain models, their evaluations), then two tune workers of one torch thread each on our 2 cores,
# then the report. Prints the wall time of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
export KEDRO_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
step() { local start=$SECONDS; "$@"; echo "$* : $((SECONDS - start)) s" >&2; }
step make run
workers() {
  for worker in 0 1; do
    .venv/bin/kedro run --pipelines tune_worker --params "tune.worker=$worker,tune.num_threads=1" \
      > "data/08_reporting/tune_worker_$worker.log" 2>&1 &
  done
  wait
}
step workers
step .venv/bin/kedro run --pipelines tune_report
