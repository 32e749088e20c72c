"""Metrics on generated text: ROUGE-L recall (TOFU's Q_A_ROUGE), exact match, and the rate of template-like answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import cache, lru_cache


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_recall(generated: Sequence[str], references: Sequence[str]) -> list[float]:
    """ROUGE-L recall of each generation against its reference (rouge-score, stemmer on), as TOFU reports it."""
    return [_scorer().score(ref, gen)["rougeL"].recall for gen, ref in zip(generated, references, strict=True)]


def exact_match(generated: Sequence[str], references: Sequence[str]) -> list[float]:
    """1.0 where the generation equals the reference after stripping white space."""
    return [float(gen.strip() == ref.strip()) for gen, ref in zip(generated, references, strict=True)]


def template_like(generated: Sequence[str], templates: Sequence[str], threshold: float = 0.5) -> list[float]:
    """1.0 where a generation is close to some template answer (ROUGE-L F1 >= threshold with the nearest one).

    Templated answers often keep the author's name and sentence pattern, so ROUGE-L recall against the true answer
    stays near 0.6 for a wrong fact; this rate tells such answers apart from refusals.

    Scoring every generation against every template is slow in rouge-score, so a template is scored only when the
    bound 2 * |shared tokens| / (|generation| + |template|), which ROUGE-L F1 never exceeds, reaches the threshold;
    each distinct generation is decided once.
    """
    tokenize = _scorer()._tokenizer.tokenize
    pool = [(template, Counter(tokenize(template))) for template in sorted(set(templates))]

    @cache
    def is_template_like(gen: str) -> float:
        tokens = Counter(tokenize(gen))
        size = sum(tokens.values())
        for template, template_tokens in pool:
            shared = sum((tokens & template_tokens).values())
            bound = 2 * shared / (size + sum(template_tokens.values())) if shared else 0.0
            if bound >= threshold and _scorer().score(template, gen)["rougeL"].fmeasure >= threshold:
                return 1.0
        return 0.0

    return [is_template_like(gen) for gen in generated]
