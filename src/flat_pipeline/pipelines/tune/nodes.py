"""Nodes of the tune pipeline: a worker's share of the trials, and the leaderboard assembled from the storage."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from datasets import Dataset
from matplotlib.figure import Figure

from flat_pipeline.evaluation import EvalSets, RetainReference, check_metrics
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.pipelines.benchmark.nodes import COLUMNS, method_parameters
from flat_pipeline.pipelines.evaluate.nodes import evaluate
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.tuning import TrialData, TuneConfig, run_worker
from flat_pipeline.tuning.report import collect, tradeoff_figure, tuned_markdown, tuned_table
from flat_pipeline.tuning.study import replay_trial

logger = logging.getLogger(__name__)


def tuned_methods(tune_params: dict[str, Any], benchmark_params: dict[str, Any]) -> list[str]:
    """`tune.methods`, or every method of `benchmark.methods`; an unknown name is an error naming the known ones."""
    known = list(benchmark_params.get("methods") or {})
    methods = tune_params.get("methods") or known
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"parameter tune.methods: {unknown} are not in benchmark.methods ({', '.join(known)})")
    return list(methods)


def tuned_method_parameters(
    tune_params: dict[str, Any], benchmark_params: dict[str, Any], unlearn_params: dict[str, Any], pairing: str | None
) -> dict[str, dict[str, Any]]:
    """Each tuned method's full settings, as the benchmark builds them (`benchmark.methods.<name>` over `unlearn`),
    with the templates' pairing; a trial's drawn settings go on top."""
    return {
        name: {
            **method_parameters(unlearn_params, benchmark_params["methods"][name], None, name),
            **({"pairing": pairing} if pairing else {}),
        }
        for name in tuned_methods(tune_params, benchmark_params)
    }


def leaderboard_columns(benchmark_params: dict[str, Any]) -> list[str]:
    return list((benchmark_params.get("leaderboard") or {}).get("columns") or COLUMNS)


def tune_worker(
    original_model: ModelBundle,
    forget_templates: Dataset,
    retain_set: Dataset,
    evaluation_sets: EvalSets,
    template_pool: list[str],
    retain_reference: dict[str, Any],
    original_evaluation_summary: dict[str, Any],
    model_params: dict[str, Any],
    unlearn_params: dict[str, Any],
    templates_params: dict[str, Any],
    benchmark_params: dict[str, Any],
    evaluate_params: dict[str, Any],
    data_prep_params: dict[str, Any],
    tune_params: dict[str, Any],
) -> dict[str, Any]:
    """Run this worker's share of the study (every worker on the same `tune.storage` shares it).

    Each method's settings are `benchmark.methods.<name>` over `unlearn`, as in the benchmark; a trial draws the
    settings of `tune.space` over them, unlearns a copy of the original model and evaluates it with the benchmark's
    evaluation. Everything (spaces, metrics, the reference) is checked before the first trial.

    Returns:
        What this worker ran (the trials' numbers, states and times): the study itself is in the storage.
    """
    config = TuneConfig.from_params(tune_params)
    metrics = config.trial_metrics(leaderboard_columns(benchmark_params))
    check_metrics(metrics, evaluation_sets, parameter="tune.metrics")
    RetainReference(**retain_reference).check_holds(metrics)
    evaluated = {**evaluate_params, "metrics": metrics}
    method_params = tuned_method_parameters(tune_params, benchmark_params, unlearn_params, templates_params["pairing"])
    data = TrialData(
        start=original_model,
        forget_templates=forget_templates,
        retain_rows=retain_set,
        prompt=PromptFormat.from_params(model_params),
        evaluate=lambda bundle: evaluate(
            bundle, evaluation_sets, template_pool, retain_reference, model_params, data_prep_params, evaluated
        )[0]["metrics"],
    )
    if config.replay is not None:  # one trial again, for `kedro reproduce`
        return replay_trial(data, config, method_params, original_evaluation_summary["metrics"])
    return run_worker(data, config, method_params, original_evaluation_summary["metrics"])


def tune_report(
    tune_worker_summary: dict[str, Any],
    original_evaluation_summary: dict[str, Any],
    retain_evaluation_summary: dict[str, Any],
    tune_params: dict[str, Any],
    benchmark_params: dict[str, Any],
) -> tuple[pd.DataFrame, str, Figure, pd.DataFrame, pd.DataFrame, str, Figure]:
    """The tuned leaderboard from the storage, whichever workers ran the trials (`tune_worker_summary`, the latest
    worker's own record, only says which one ran last).

    Returns:
        The table (CSV: mean and std per metric), its markdown with the rule, the trade-off figure, every trial (CSV),
        and the table, markdown and figure again for the MLflow run.
    """
    config = TuneConfig.from_params(tune_params)
    methods = tuned_methods(tune_params, benchmark_params)
    columns = leaderboard_columns(benchmark_params)
    original, retain = original_evaluation_summary["metrics"], retain_evaluation_summary["metrics"]
    trials = collect(config, methods)
    missing = {m: config.n_trials - len(p["search"]) for m, p in trials.items() if len(p["search"]) < config.n_trials}
    if missing:
        logger.warning("tune report: searches not finished (trials left per method): %s", missing)
    table = tuned_table(trials, config, columns, original, retain)
    markdown = tuned_markdown(table, config, columns, original, benchmark_params.get("title", "unlearning methods"))
    figure = tradeoff_figure(trials, table, config, original, retain)
    every_trial = pd.DataFrame(
        [
            {"method": method, "phase": phase, **{k: v for k, v in t.items() if k not in ("metrics", "drawn")},
             **{f"setting.{k}": v for k, v in t["drawn"].items()}, **t["metrics"]}
            for method, phases in trials.items()
            for phase, records in phases.items()
            for t in records
        ]
    )  # fmt: skip
    logger.info("tune report: %d trials from workers %s; the latest worker (%s) ran %d of them", len(every_trial),
                sorted(set(every_trial.get("worker", pd.Series(dtype=str)).dropna())),
                tune_worker_summary.get("worker"), len(tune_worker_summary.get("trials", [])))  # fmt: skip
    return table, markdown, figure, every_trial, table, markdown, figure
