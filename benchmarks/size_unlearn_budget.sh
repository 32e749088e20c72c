#!/usr/bin/env bash
# FLAT's default unlearning budget on the default world, measured through the pipeline itself: for each
# "learning_rate epochs" pair, `kedro run --pipelines unlearn,evaluate_unlearned` and the unlearned model's forget /
# retain ROUGE-L and model_utility, beside the original model's. Needs a `kedro run` first (the original and retain
# models and the retain reference); each budget takes about a minute on a quiet 2-core machine.
#
#   bash benchmarks/size_unlearn_budget.sh "3.0e-4 4" "2.5e-4 5" ...
set -euo pipefail
cd "$(dirname "$0")/.."
export KEDRO_DISABLE_TELEMETRY=true HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
summary() {  # the latest summary of a role: forget / retain ROUGE-L, model_utility
  .venv/bin/python - "$1" <<'PY'
import glob, json, sys
path = sorted(glob.glob(f"data/08_reporting/{sys.argv[1]}_evaluation_summary.json/*/*.json"))[-1]
m = json.load(open(path))["metrics"]
print(f"{m['forget_Q_A_ROUGE']:.4f} {m['retain_Q_A_ROUGE']:.4f} {m['model_utility']:.4f}")
PY
}
read -r f0 r0 u0 <<<"$(summary original)"
echo "| learning rate | epochs | forget ROUGE-L | F/F0 | retain ROUGE-L | R/R0 | model_utility |"
echo "|---|---|---|---|---|---|---|"
echo "| original | - | $f0 | 1.00 | $r0 | 1.00 | $u0 |"
for budget in "$@"; do
  read -r lr epochs <<<"$budget"
  .venv/bin/kedro run --pipelines unlearn,evaluate_unlearned \
    --params "unlearn.learning_rate=$lr,unlearn.num_train_epochs=$epochs" >"/tmp/size_unlearn_${lr}_${epochs}.log" 2>&1
  read -r f r u <<<"$(summary unlearned)"
  python3 -c "print(f'| $lr | $epochs | $f | {$f/$f0:.2f} | $r | {$r/$r0:.2f} | $u |')"
done
