"""Evaluating a model: the requested metrics of `METRICS` on an `EvalContext`, the retain model's reference, and
the per-item table."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from flat_pipeline.evaluation.config import EvaluateConfig
from flat_pipeline.evaluation.context import EvalContext
from flat_pipeline.evaluation.reference import RetainReference, tokenizer_fingerprint
from flat_pipeline.evaluation.registry import METRICS, check_metrics
from flat_pipeline.evaluation.sets import EvalSets
from flat_pipeline.evaluation.text_metrics import COPYRIGHT_METRICS
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import PromptFormat

logger = logging.getLogger(__name__)


def run_metrics(ctx: EvalContext, metric_names: Sequence[str]) -> dict[str, float]:
    """The requested metrics on a context, each followed by the values derived from it (log10_forget_quality,
    es_em_skipped_items); those comparing with the retain model are left out, with a warning, when it has no
    reference."""
    if ctx.reference is None:
        left_out = [name for name in metric_names if METRICS[name].needs_reference]
        if left_out:
            logger.warning("no retain reference: leaving out %s, which compare with the retain model", left_out)
    summary: dict[str, float] = {}
    for name in metric_names:
        metric = METRICS[name]
        if metric.needs_reference and ctx.reference is None:
            continue
        try:
            summary[name] = ctx.metric(name)
        except OverflowError as error:  # e.g. the perplexity of a diverged model: exp of a mean NLL in the thousands
            logger.warning("%s overflowed (%s): reported as inf", name, error)
            summary[name] = math.inf
        logger.info("%s = %.6g", name, summary[name])
        if metric.derived is not None:
            summary.update(metric.derived(ctx, summary[name]))
    return summary


def evaluate_model(
    bundle: ModelBundle,
    sets: EvalSets,
    metric_names: Sequence[str],
    config: EvaluateConfig,
    *,
    prompt: PromptFormat | None = None,
    templates: Sequence[str] = (),
    reference: RetainReference | None = None,
) -> tuple[dict[str, float], EvalContext]:
    """Every requested metric of one model, and the context holding the per-item values."""
    check_metrics(metric_names, sets)
    ctx = EvalContext(bundle, sets, config, prompt or PromptFormat(), templates, reference)
    return run_metrics(ctx, metric_names), ctx


def evaluate_retain_model(
    bundle: ModelBundle,
    sets: EvalSets,
    metric_names: Sequence[str],
    config: EvaluateConfig,
    *,
    forget_split: str,
    prompt: PromptFormat | None = None,
    templates: Sequence[str] = (),
) -> tuple[dict[str, float], EvalContext, RetainReference]:
    """Evaluate the retain model against itself (forget_quality 1, privleak 0, forget_quality_gap 0) and return its
    pinned reference: what the requested metrics compare with (per-item forget truth ratios for forget_quality, the
    Min-K% AUC for privleak, copyright BLEU / ROUGE for forget_quality_gap), with the split, model and tokenizer."""
    check_metrics(metric_names, sets)
    ctx = EvalContext(bundle, sets, config, prompt or PromptFormat(), templates)
    ctx.reference = RetainReference(
        forget_split=forget_split,
        retain_model=bundle.source or "unknown",
        tokenizer=tokenizer_fingerprint(bundle.tokenizer),
        forget_truth_ratio=[float(r) for r in ctx.truth_ratios("forget")] if "forget_quality" in metric_names else [],
        mia_min_k=ctx.metric("mia_min_k") if "privleak" in metric_names else None,
        completion={n: ctx.metric(n) for n in COPYRIGHT_METRICS} if "forget_quality_gap" in metric_names else {},
    )
    return run_metrics(ctx, metric_names), ctx, ctx.reference


def item_table(ctx: EvalContext) -> list[dict[str, Any]]:
    """Per-item results in long form: one record per (set, item) with every value recorded for it."""
    records = []
    for set_name, columns in ctx.items.items():
        n = max(len(values) for values in columns.values())
        for i in range(n):
            record: dict[str, Any] = {"set": set_name, "index": i}
            for column, values in columns.items():
                if i < len(values):
                    value = values[i]
                    record[column] = value.item() if isinstance(value, np.generic) else value
            records.append(record)
    return records
