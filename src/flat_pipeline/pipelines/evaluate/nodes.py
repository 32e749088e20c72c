"""Nodes of the evaluate pipeline."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from typing import Any

import pandas as pd
from datasets import Dataset, DatasetDict
from matplotlib.figure import Figure

from flat_pipeline.evaluation import (
    EvalSets,
    EvaluateConfig,
    RetainReference,
    check_metrics,
    evaluate_model,
    evaluate_retain_model,
    evaluation_sets,
    item_table,
    tokenizer_fingerprint,
)
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.utility import LmEvalConfig, lm_eval_utility

logger = logging.getLogger(__name__)


def build_evaluation_sets(
    benchmark: DatasetDict,
    forget_set: Dataset,
    holdout_set: Dataset,
    evaluate_params: dict[str, Any],
) -> EvalSets:
    """The evaluation sets by role, checked against the requested metrics before any model is loaded.

    Args:
        benchmark: every split of the source.
        forget_set: the forget QA (with paraphrased and perturbed answers where the source has them).
        holdout_set: QA never trained on (membership-inference negatives); may be empty.
        evaluate_params: `evaluate` parameters; `sets` names the benchmark split of each role.
    """
    config = EvaluateConfig.from_params(evaluate_params.get("settings", {}))
    LmEvalConfig.from_params(evaluate_params.get("lm_eval"))  # a typo fails here, before any model is loaded
    sets = evaluation_sets(
        benchmark, evaluate_params.get("sets", {}), forget_set, holdout_set, config.completion_prompt_words
    )
    check_metrics(evaluate_params["metrics"], sets)
    logger.info("evaluation sets: %s", {name: len(rows) for name, rows in sets.items()})
    return sets


def template_pool(forget_templates: Dataset) -> list[str]:
    """Every template answer the unlearning drew from, to count template-like generations."""
    return sorted({t for row in forget_templates["template_answers"] for t in row})


def _metrics_for_mlflow(summary: dict[str, float]) -> dict[str, dict[str, float]]:
    return {name: {"value": value, "step": 0} for name, value in summary.items() if not math.isnan(value)}


def _report(
    model: ModelBundle, summary: dict[str, float], reference: RetainReference | None, evaluate_params: dict[str, Any]
) -> dict[str, Any]:
    """The summary JSON: the metrics, lm-eval's utility numbers (and the tasks that could not run, with why)."""
    utility = lm_eval_utility(model, LmEvalConfig.from_params(evaluate_params.get("lm_eval")))
    report = {
        "model": model.source,
        "metrics": {**summary, **utility.metrics},
        "retain_reference": None
        if reference is None
        else {"retain_model": reference.retain_model, "forget_split": reference.forget_split},
    }
    if utility.not_run:
        report["lm_eval_not_run"] = utility.not_run
    return report


def evaluate_retain(
    retain_model: ModelBundle,
    sets: EvalSets,
    templates: list[str],
    model_params: dict[str, Any],
    data_prep_params: dict[str, Any],
    evaluate_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Evaluate the retain model and pin what the requested metrics compare the others with (retain_reference).

    Returns:
        The summary (JSON), the per-item table, the metrics for MLflow, and the retain reference (JSON).
    """
    summary, ctx, reference = evaluate_retain_model(
        retain_model,
        sets,
        evaluate_params["metrics"],
        EvaluateConfig.from_params(evaluate_params.get("settings", {})),
        forget_split=data_prep_params["forget_split"],
        prompt=PromptFormat.from_params(model_params),
        templates=templates,
    )
    report = _report(retain_model, summary, reference, evaluate_params)
    return report, pd.DataFrame(item_table(ctx)), _metrics_for_mlflow(report["metrics"]), asdict(reference)


def evaluate(
    model: ModelBundle,
    sets: EvalSets,
    templates: list[str],
    reference: dict[str, Any] | None,
    model_params: dict[str, Any],
    data_prep_params: dict[str, Any],
    evaluate_params: dict[str, Any],
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Evaluate a model; forget_quality, privleak and forget_quality_gap compare it with the pinned retain reference.
    Without one (None: no retain model evaluated yet) those are left out, with a warning naming them, and the other
    metrics are reported.

    Raises:
        ValueError: the reference was computed for another forget split, tokenizer or forget set size, or holds no
            numbers for a requested metric that compares with it.
    """
    config = EvaluateConfig.from_params(evaluate_params.get("settings", {}))
    pinned = None if reference is None else RetainReference(**reference)
    if pinned is not None:
        n_forget = len(sets["forget"]) if config.max_items is None else min(len(sets["forget"]), config.max_items)
        pinned.check(data_prep_params["forget_split"], tokenizer_fingerprint(model.tokenizer), n_forget)
        pinned.check_holds(evaluate_params["metrics"])
    summary, ctx = evaluate_model(
        model,
        sets,
        evaluate_params["metrics"],
        config,
        prompt=PromptFormat.from_params(model_params),
        templates=templates,
        reference=pinned,
    )
    report = _report(model, summary, pinned, evaluate_params)
    return report, pd.DataFrame(item_table(ctx)), _metrics_for_mlflow(report["metrics"])


def compare_models(**summaries: dict[str, Any]) -> tuple[Figure, Figure]:
    """One bar chart per headline metric, the models side by side (twice: the catalog's copy and MLflow's).

    A standalone `Figure`, not pyplot's: it needs no backend, so importing or running this node leaves the backend of
    the process (a notebook's inline one) as it was, and nothing accumulates in pyplot's figure registry.
    """
    headline = [
        "forget_quality",
        "model_utility",
        "forget_Q_A_ROUGE",
        "retain_Q_A_ROUGE",
        "forget_truth_ratio",
        "privleak",
        "forget_Q_A_EM",
        "forget_verbmem_ROUGE",
        "forget_knowmem_ROUGE",
        "retain_knowmem_ROUGE",
        "forget_copyright_BLEU",
        "forget_copyright_ROUGE",
        "forget_quality_gap",
        "utility_avg_acc",
    ]
    roles = [role.removesuffix("_evaluation_summary") for role in summaries]
    reported = set().union(*(s["metrics"] for s in summaries.values()))
    shown = [m for m in headline if m in reported] or sorted(reported)[:8] or ["no metric reported"]
    columns = min(6, len(shown))
    rows = math.ceil(len(shown) / columns)
    figure = Figure(figsize=(2.6 * columns, 3.0 * rows))
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, shown, strict=False):
        values = [s["metrics"].get(metric, float("nan")) for s in summaries.values()]
        ax.bar(roles, values, color=["#4c72b0", "#55a868", "#c44e52", "#8172b2"][: len(roles)])
        ax.set_title(metric, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        if metric == "forget_quality":
            ax.set_yscale("log")
    figure.suptitle("original vs retain vs unlearned")
    figure.tight_layout()
    return figure, figure
