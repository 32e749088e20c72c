"""Metrics of a context on text sets: FLAT's copyright completion and forget_quality_gap, MUSE's VerbMem and
KnowMem, and perplexity."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from flat_pipeline.evaluation.aggregate import mean_of
from flat_pipeline.metrics import completion

if TYPE_CHECKING:  # the context imports the registry, which imports this module
    from flat_pipeline.evaluation.context import EvalContext


def copyright_metric(ctx: EvalContext, key: str) -> float:
    """FLAT's copyright completion on the forget completion set: BLEU (0-100) or ROUGE-L recall of greedy
    continuations."""
    generated, references = ctx.continuations()
    values = completion.copyright_scores(generated, references, ctx.config.reference_quirks)[key]
    ctx.record("forget_completion", f"copyright_{key}", values)
    return mean_of(values)


COPYRIGHT_METRICS = ("forget_copyright_BLEU", "forget_copyright_ROUGE")


def forget_quality_gap(ctx: EvalContext) -> float:
    """FLAT's HP "Forget Quality Gap": |BLEU - BLEU_retain| + |ROUGE-L - ROUGE-L_retain| on the completion set, BLEU
    on 0-100 and ROUGE-L recall on 0-1 as computed (the paper's exact formula and scale are not known, spec §3.4)."""
    if ctx.reference is None or not ctx.reference.completion:
        raise ValueError(
            "forget_quality_gap needs the retain model's copyright BLEU and ROUGE (retain_reference): evaluate the "
            "retain model with forget_quality_gap in evaluate.metrics"
        )
    return sum(abs(ctx.metric(name) - ctx.reference.completion[name]) for name in COPYRIGHT_METRICS)


def verbmem(ctx: EvalContext) -> float:
    """MUSE VerbMem: ROUGE-L F1 of the continuation against the completion set's reference, cut (as MUSE) to as many
    tokens as the continuation may have."""
    generated, references = ctx.continuations()
    tokenizer, budget = ctx.bundle.tokenizer, ctx.config.completion_max_new_tokens
    cut = [tokenizer.decode(tokenizer(ref, add_special_tokens=False)["input_ids"][:budget]) for ref in references]
    values = completion.verbmem_rouge(generated, cut)
    ctx.record("forget_completion", "verbmem_ROUGE", values)
    return mean_of(values)


def knowmem(ctx: EvalContext, set_name: str) -> float:
    """MUSE KnowMem: ROUGE-L F1 of in-context answers, cut where the model starts the next question."""
    generated, references = ctx.knowmem_answers(set_name)
    return mean_of(completion.knowmem_rouge(generated, references))


def perplexity(ctx: EvalContext, set_name: str) -> float:
    """exp of the mean token negative log-likelihood over every token of a text set (eos included)."""
    scores = ctx.passage_scores(set_name)
    total = sum(-sum(s.token_logprobs) for s in scores)
    return math.exp(total / sum(len(s.token_logprobs) for s in scores))
