"""Metrics on generated text: ROUGE-L recall (TOFU's Q_A_ROUGE), exact match, and the rate of template-like answers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


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
    """
    pool = sorted(set(templates))
    return [
        float(max(_scorer().score(template, gen)["rougeL"].fmeasure for template in pool) >= threshold)
        for gen in generated
    ]
