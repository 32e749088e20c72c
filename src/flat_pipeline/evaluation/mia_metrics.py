"""Membership-inference metrics of a context: the attacks' ROC AUC (forget against holdout) and privleak."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flat_pipeline.metrics import mia

if TYPE_CHECKING:  # the context imports the registry, which imports this module
    from flat_pipeline.evaluation.context import EvalContext


def _attack_scores(ctx: EvalContext, set_name: str, attack: str) -> list[float]:
    score = mia.MIA_ATTACKS[attack]
    # zlib compresses the text of the tokens scored, as open-unlearning does: not the answer as written, which differs
    # where `whole` tokenization masks the answer's first token (or a raw text was cut to max_length)
    return [
        score({"logprobs": s.token_logprobs, "z_scores": s.z_scores, "text": text}, ctx.config.mia_k)
        for s, text in zip(ctx.answer_scores(set_name), ctx.scored_texts(set_name), strict=True)
    ]


def mia_auc(ctx: EvalContext, attack: str) -> float:
    """ROC AUC of a membership attack telling forget items (label 0) from holdout items (label 1): about 1 when
    the forget set still looks trained on, about 0.5 for a model that never saw it."""
    forget_scores = _attack_scores(ctx, "forget", attack)
    ctx.record("forget", f"mia_{attack}", forget_scores)
    ctx.record("holdout", f"mia_{attack}", _attack_scores(ctx, "holdout", attack))
    return mia.mia_auc(forget_scores, ctx.items["holdout"][f"mia_{attack}"])


def privleak(ctx: EvalContext) -> float:
    """(1 - AUC) against the retain model's (1 - AUC), in percent, from Min-K%: about -100 before unlearning, 0 for
    the retain model, positive when unlearning overshoots."""
    reference_auc = ctx.reference.mia_min_k if ctx.reference is not None else None
    return mia.privleak(ctx.metric("mia_min_k"), reference_auc)
