"""The metric registry: `METRICS`, name -> how to compute it and the sets it reads (`runner.py` evaluates models)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from flat_pipeline.evaluation.mia_metrics import mia_auc, privleak
from flat_pipeline.evaluation.text_metrics import (
    copyright_metric,
    forget_quality_gap,
    knowmem,
    perplexity,
    verbmem,
)
from flat_pipeline.evaluation.tofu_metrics import (
    es_em_skipped_items,
    exact_memorization,
    extraction_strength,
    forget_quality,
    log10_forget_quality,
    model_utility,
    qa_exact_match,
    qa_prob,
    qa_prob_normalised,
    qa_rouge,
    qa_template_rate,
    truth_ratio,
)
from flat_pipeline.metrics import mia

if TYPE_CHECKING:  # the context reads metrics by name from here
    from flat_pipeline.evaluation.context import EvalContext


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it and which evaluation sets it reads."""

    compute: Callable[[EvalContext], float]
    needs: tuple[str, ...]
    needs_reference: bool = False
    generates: bool = False  # reads greedy generations (costly), not teacher-forced scores alone
    # summary values reported with the metric, from the context and the metric's value
    derived: Callable[[EvalContext, float], dict[str, float]] | None = None


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
    "forget_quality": Metric(forget_quality, ("forget",), needs_reference=True, derived=log10_forget_quality),
    "model_utility": Metric(model_utility, ("retain", "ra", "wf"), generates=True),
    "extraction_strength": Metric(extraction_strength, ("forget",), derived=es_em_skipped_items),
    "exact_memorization": Metric(exact_memorization, ("forget",), derived=es_em_skipped_items),
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
