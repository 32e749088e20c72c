"""TOFU's metrics of a context: Prob, ROUGE, truth ratio, forget_quality, model_utility, extraction strength and
exact memorisation, and our exact-match and template rates."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from flat_pipeline.evaluation.aggregate import mean_of
from flat_pipeline.metrics import tofu
from flat_pipeline.metrics.text import exact_match, rouge_l_recall, template_like

if TYPE_CHECKING:  # the context imports the registry, which imports this module
    from flat_pipeline.evaluation.context import EvalContext


def qa_prob(ctx: EvalContext, set_name: str) -> float:
    """TOFU Q_A_Prob: mean over items of exp(mean answer-token log-probability), eos included."""
    values = [tofu.answer_prob(s.token_logprobs) for s in ctx.answer_scores(set_name)]
    ctx.record(set_name, "Q_A_Prob", values)
    return mean_of(values)


def qa_prob_normalised(ctx: EvalContext, set_name: str) -> float:
    """TOFU's real-authors / world-facts probability: p(answer) / (p(answer) + sum of p(wrong answers))."""
    values = tofu.prob_normalised_items(*ctx._correct_and_perturbed(set_name))
    ctx.record(set_name, "Q_A_Prob_normalised", values)
    return mean_of(values)


def qa_rouge(ctx: EvalContext, set_name: str) -> float:
    """TOFU Q_A_ROUGE: ROUGE-L recall of the greedy answer against the true one."""
    values = rouge_l_recall(ctx.generations(set_name), ctx.rows(set_name)["answer"])
    ctx.record(set_name, "Q_A_ROUGE", values)
    return mean_of(values)


def qa_exact_match(ctx: EvalContext, set_name: str) -> float:
    """Share of greedy answers equal to the true answer: ROUGE-L recall stays high for templated wrong facts."""
    values = exact_match(ctx.generations(set_name), ctx.rows(set_name)["answer"])
    ctx.record(set_name, "Q_A_EM", values)
    return mean_of(values)


def qa_template_rate(ctx: EvalContext, set_name: str) -> float:
    """Share of greedy answers close to a template answer (ROUGE-L F1 >= `template_threshold`)."""
    if not ctx.templates:
        return float("nan")
    values = template_like(ctx.generations(set_name), ctx.templates, ctx.config.template_threshold)
    ctx.record(set_name, "template_like", values)
    return mean_of(values)


def truth_ratio(ctx: EvalContext, set_name: str) -> float:
    """TOFU truth ratio: mean min(R, 1/R) on the forget set, mean max(0, 1 - R) elsewhere."""
    ratios = ctx.truth_ratios(set_name)
    if set_name == "forget":
        return tofu.truth_ratio_closer_to_1(ratios)
    return tofu.truth_ratio_true_better(ratios)


def forget_quality(ctx: EvalContext) -> float:
    """KS-test p-value between this model's and the retain model's per-item forget truth ratios."""
    if ctx.reference is None or not ctx.reference.forget_truth_ratio:
        raise ValueError(
            "forget_quality needs the retain model's per-item forget truth ratios (retain_reference): evaluate the "
            "retain model with forget_quality in evaluate.metrics"
        )
    return tofu.forget_quality(ctx.truth_ratios("forget"), ctx.reference.forget_truth_ratio)


def model_utility(ctx: EvalContext) -> float:
    """Harmonic mean of retain / real-authors / world-facts Prob, ROUGE and truth ratio (a zero makes it zero)."""
    return tofu.model_utility({name: ctx.metric(name) for name in tofu.MODEL_UTILITY_KEYS})


def _aligned_items(ctx: EvalContext, name: str, per_item: Callable[[Sequence[bool]], float]) -> float:
    """A per-item argmax metric of the forget answers, over the items whose prompt is a token prefix only.

    Where `whole` tokenization cuts inside a token, the labels start one token late, so the argmax hits measure a
    shifted answer; those items get None, `es_em_skipped` says which, and the mean is over the others.
    """
    skipped = ctx.misaligned("forget")
    scores = ctx.answer_scores("forget")
    values = [None if skip else per_item(s.argmax_hits) for s, skip in zip(scores, skipped, strict=True)]
    ctx.record("forget", name, values)
    ctx.record("forget", "es_em_skipped", skipped)
    return mean_of([v for v in values if v is not None])


def extraction_strength(ctx: EvalContext) -> float:
    return _aligned_items(ctx, "extraction_strength", tofu.extraction_strength)


def exact_memorization(ctx: EvalContext) -> float:
    return _aligned_items(ctx, "exact_memorization", tofu.exact_memorization)


def es_em_skipped_items(ctx: EvalContext, value: float) -> dict[str, float]:
    """How many forget items extraction strength and exact memorisation left out (reported with either of them)."""
    return {"es_em_skipped_items": sum(ctx.misaligned("forget"))}


def log10_forget_quality(ctx: EvalContext, value: float) -> dict[str, float]:
    """forget_quality on the log10 scale its seeds are averaged and charted on (reported with it)."""
    return {"log10_forget_quality": tofu.log10_forget_quality(value)}
