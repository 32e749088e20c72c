"""The metric registry (`METRICS`: name -> how to compute it and the sets it reads) and evaluating a model."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from flat_pipeline.evaluation.config import EvaluateConfig
from flat_pipeline.evaluation.context import EvalContext
from flat_pipeline.evaluation.mia_metrics import mia_auc, privleak
from flat_pipeline.evaluation.reference import RetainReference, tokenizer_fingerprint
from flat_pipeline.evaluation.sets import EvalSets
from flat_pipeline.evaluation.text_metrics import (
    COPYRIGHT_METRICS,
    copyright_metric,
    forget_quality_gap,
    knowmem,
    perplexity,
    verbmem,
)
from flat_pipeline.evaluation.tofu_metrics import (
    exact_memorization,
    extraction_strength,
    forget_quality,
    model_utility,
    qa_exact_match,
    qa_prob,
    qa_prob_normalised,
    qa_rouge,
    qa_template_rate,
    truth_ratio,
)
from flat_pipeline.metrics import mia
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import PromptFormat

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it and which evaluation sets it reads."""

    compute: Callable[[EvalContext], float]
    needs: tuple[str, ...]
    needs_reference: bool = False
    generates: bool = False  # reads greedy generations (costly), not teacher-forced scores alone


def _qa_metrics(prefix: str, set_name: str, truth_ratio_name: str, prob: Callable[..., float]) -> dict[str, Metric]:
    needs = (set_name,)
    return {
        f"{prefix}_Q_A_Prob{'_normalised' if prob is qa_prob_normalised else ''}": Metric(
            partial(prob, set_name=set_name), needs
        ),
        f"{prefix}_Q_A_ROUGE": Metric(partial(qa_rouge, set_name=set_name), needs, generates=True),
        f"{prefix}_{truth_ratio_name}": Metric(partial(truth_ratio, set_name=set_name), needs),
        f"{prefix}_Q_A_EM": Metric(partial(qa_exact_match, set_name=set_name), needs, generates=True),
        f"{prefix}_Q_A_template_rate": Metric(partial(qa_template_rate, set_name=set_name), needs, generates=True),
    }


METRICS: dict[str, Metric] = {
    **_qa_metrics("forget", "forget", "truth_ratio", qa_prob),
    **_qa_metrics("retain", "retain", "Truth_Ratio", qa_prob),
    **_qa_metrics("ra", "ra", "Truth_Ratio", qa_prob_normalised),
    **_qa_metrics("wf", "wf", "Truth_Ratio", qa_prob_normalised),
    "forget_quality": Metric(forget_quality, ("forget",), needs_reference=True),
    "model_utility": Metric(model_utility, ("retain", "ra", "wf"), generates=True),
    "extraction_strength": Metric(extraction_strength, ("forget",)),
    "exact_memorization": Metric(exact_memorization, ("forget",)),
    **{f"mia_{attack}": Metric(partial(mia_auc, attack=attack), ("forget", "holdout")) for attack in mia.MIA_ATTACKS},
    "privleak": Metric(privleak, ("forget", "holdout"), needs_reference=True),
    "forget_copyright_BLEU": Metric(partial(copyright_metric, key="bleu"), ("forget_completion",), generates=True),
    "forget_copyright_ROUGE": Metric(
        partial(copyright_metric, key="rouge_l_recall"), ("forget_completion",), generates=True
    ),
    "forget_quality_gap": Metric(forget_quality_gap, ("forget_completion",), needs_reference=True, generates=True),
    "forget_verbmem_ROUGE": Metric(verbmem, ("forget_completion",), generates=True),
    **{
        f"{role}_knowmem_ROUGE": Metric(
            partial(knowmem, set_name=f"{role}_knowmem"), (f"{role}_knowmem", f"{role}_knowmem_shots"), generates=True
        )
        for role in ("forget", "retain")
    },
    "holdout_perplexity": Metric(partial(perplexity, set_name="holdout_text"), ("holdout_text",)),
}


def check_metrics(names: Sequence[str], sets: Mapping[str, Any], parameter: str = "evaluate.metrics") -> None:
    """Raise before any model work if a metric is unknown or reads an evaluation set the source does not provide;
    `parameter` is the setting the messages name (`unlearn.trajectory.metrics`)."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"parameter {parameter}: unknown metric(s) {unknown}; registered: {sorted(METRICS)}")
    for name in names:
        missing = [s for s in METRICS[name].needs if s not in sets]
        if missing:
            raise ValueError(
                f"parameter {parameter}: '{name}' needs the evaluation set(s) {missing}, which this benchmark "
                f"does not provide (it has {sorted(sets)})"
            )


def run_metrics(ctx: EvalContext, metric_names: Sequence[str]) -> dict[str, float]:
    """The requested metrics on a context; those needing the retain reference are skipped when it has none."""
    summary: dict[str, float] = {}
    for name in metric_names:
        if METRICS[name].needs_reference and ctx.reference is None:
            logger.info("skipping %s: no retain reference given", name)
            continue
        summary[name] = ctx.metric(name)
        logger.info("%s = %.6g", name, summary[name])
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
