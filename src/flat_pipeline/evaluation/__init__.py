"""Evaluate one model: every metric is registered by name in `METRICS` and computed from a shared `EvalContext`.

The context scores and generates lazily and once: `forget_Q_A_Prob`, `forget_truth_ratio` and `forget_quality` all
read the same teacher-forced scores of the forget set's candidate answers, which `score_candidates` computes with
each question's prompt run once. Metric names follow open-unlearning's (`forget_quality`, `model_utility`,
`forget_Q_A_ROUGE`, ...) so our numbers read against its tables; definitions in spec/benchmarks-and-metrics.md
§1.4 and §8.

Evaluation sets (`EvalSets`, built by `evaluation_sets` from the roles in `evaluate.sets`):
- `forget`, `holdout`: QA rows (`question`, `answer`, and where a metric needs them `paraphrased_answer` and
  `perturbed_answer`, a list), or raw texts (`text`: MUSE's privleak splits), whose true answers or texts the
  membership attacks and extraction metrics score;
- `retain`, `ra` (real authors), `wf` (world facts): QA rows as above;
- `forget_completion`: `prompt` and `reference` rows (the start of a forget text and its true continuation: HP's
  hp_test_qa_200, MUSE's verbmem forget, the synthetic forget authors' passages cut after some words);
- `holdout_text`: texts never trained on, for perplexity;
- `forget_knowmem`, `retain_knowmem` and their `_shots`: QA rows for MUSE's in-context KnowMem.

Modules, each importing only those before it (tests/test_import_cycles.py): `config.py` (EvaluateConfig),
`reference.py` (RetainReference: the retain model's numbers), `sets.py` (the sets by role), `aggregate.py` (the mean
over items), one module of metric functions per family (`tofu_metrics.py`, `mia_metrics.py`, `text_metrics.py`; they
name `EvalContext` in type hints only), `registry.py` (METRICS, check_metrics), `context.py` (EvalContext: the cached
scores and generations, and metrics by name) and `runner.py` (run_metrics, evaluate_model, evaluate_retain_model,
item_table).

Adding a metric is one function of the context in its family's module plus one `METRICS` entry in `registry.py`
naming the sets it needs.
"""

from flat_pipeline.evaluation.config import EvaluateConfig
from flat_pipeline.evaluation.context import EvalContext
from flat_pipeline.evaluation.reference import RetainReference, reference_from_open_unlearning, tokenizer_fingerprint
from flat_pipeline.evaluation.registry import METRICS, Metric, check_metrics
from flat_pipeline.evaluation.runner import evaluate_model, evaluate_retain_model, item_table, run_metrics
from flat_pipeline.evaluation.sets import ANSWER_ONLY_SETS, SET_ROLES, EvalSets, completion_rows, evaluation_sets
from flat_pipeline.evaluation.text_metrics import COPYRIGHT_METRICS

__all__ = [
    "ANSWER_ONLY_SETS",
    "COPYRIGHT_METRICS",
    "METRICS",
    "SET_ROLES",
    "EvalContext",
    "EvalSets",
    "EvaluateConfig",
    "Metric",
    "RetainReference",
    "check_metrics",
    "completion_rows",
    "evaluate_model",
    "evaluate_retain_model",
    "evaluation_sets",
    "item_table",
    "reference_from_open_unlearning",
    "run_metrics",
    "tokenizer_fingerprint",
]
