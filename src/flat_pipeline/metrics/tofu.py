"""TOFU metrics from per-item answer-token log-probabilities, matching open-unlearning's evaluator.

Each item's `logprobs` is log p(token) over its answer tokens, the last one being the eos, which the reference
scores as an answer token in Prob and the truth ratio (extraction strength and exact memorisation leave it out, as
the reference does). Definitions and the 1e-10 terms follow benchmarks-and-metrics.md §1.4 and §8, so that
aggregates agree with open-unlearning's tables to about 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

# The 9 components of open-unlearning's model_utility, in its order.
MODEL_UTILITY_KEYS: tuple[str, ...] = (
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
)


def _mean_logprob(logprobs: Sequence[float]) -> float:
    values = np.asarray(logprobs, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D sequence of token log-probabilities, got shape {values.shape}")
    return float(values.mean())


def answer_prob(logprobs: Sequence[float]) -> float:
    """TOFU's normalised answer probability P̄ = exp(mean token log-prob), eos included; length-fair across answers."""
    return math.exp(_mean_logprob(logprobs))


def truth_ratios(correct: Sequence[Sequence[float]], perturbed: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    """Per-item truth ratio: geometric mean of the wrong answers' P̄ over the correct answer's P̄.

    `correct[i]` holds the log-probs of item i's paraphrased answer (forget/retain) or its answer (real_authors,
    world_facts); `perturbed[i][k]` those of its k-th wrong answer. Each answer is averaged over its own tokens
    first, then over k.
    """
    if len(correct) != len(perturbed):
        raise ValueError(f"correct has {len(correct)} items but perturbed has {len(perturbed)}")
    ratios = []
    for item_correct, item_wrong in zip(correct, perturbed, strict=True):
        if len(item_wrong) == 0:
            raise ValueError("every item needs at least one perturbed answer")
        wrong = math.exp(float(np.mean([_mean_logprob(answer) for answer in item_wrong])))
        ratios.append(wrong / (answer_prob(item_correct) + 1e-10))
    return np.asarray(ratios, dtype=np.float64)


def truth_ratio_closer_to_1(tr: Sequence[float]) -> float:
    """Forget aggregate mean(min(tr, 1/tr)): 1 when the model cannot tell the true answer from wrong ones."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.minimum(tr, 1.0 / (tr + 1e-10))))


def truth_ratio_true_better(tr: Sequence[float]) -> float:
    """Retain/real_authors/world_facts aggregate mean(max(0, 1 - tr)): high when the true answer is preferred."""
    tr = np.asarray(tr, dtype=np.float64)
    return float(np.mean(np.maximum(0.0, 1.0 - tr)))


def prob_normalised_items(
    correct: Sequence[Sequence[float]], perturbed: Sequence[Sequence[Sequence[float]]]
) -> list[float]:
    """Per item, P̄(correct) / (P̄(correct) + Σ_k P̄(wrong_k)); TOFU's Prob for real_authors/world_facts."""
    if len(correct) != len(perturbed):
        raise ValueError(f"correct has {len(correct)} items but perturbed has {len(perturbed)}")
    values = []
    for item_correct, item_wrong in zip(correct, perturbed, strict=True):
        p_correct = answer_prob(item_correct)
        values.append(p_correct / (p_correct + sum(answer_prob(answer) for answer in item_wrong) + 1e-10))
    return values


def prob_normalised(correct: Sequence[Sequence[float]], perturbed: Sequence[Sequence[Sequence[float]]]) -> float:
    """The mean over items of `prob_normalised_items`."""
    return float(np.mean(prob_normalised_items(correct, perturbed)))


def forget_quality(model_tr: Sequence[float], retain_tr: Sequence[float]) -> float:
    """Two-sample KS p-value between the per-item forget truth ratios of a model and of the retain model.

    High means the unlearned model is indistinguishable from one never trained on the forget set.
    """
    return float(stats.ks_2samp(np.asarray(model_tr, dtype=np.float64), np.asarray(retain_tr, dtype=np.float64)).pvalue)


# The smallest positive float (a subnormal, 5e-324): a p-value that underflowed to exactly 0 reads as this, so that its
# log10 is about -323.3, below any p-value that did not underflow, rather than -inf, which charts and means drop.
SMALLEST_P_VALUE = math.ulp(0.0)


def log10_forget_quality(p_value: float) -> float:
    """log10 of a forget_quality p-value, the scale to average and chart it on (it spans 1e-120 to 1); a p-value of
    0 is clamped to SMALLEST_P_VALUE, NaN stays NaN."""
    if math.isnan(p_value):
        return math.nan
    return math.log10(max(p_value, SMALLEST_P_VALUE))


def model_utility(components: Mapping[str, float]) -> float:
    """Harmonic mean of the utility components (see MODEL_UTILITY_KEYS); 0 if any of them is 0, as in TOFU."""
    if not components:
        raise ValueError("model_utility needs at least one component")
    for name, value in components.items():
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"model_utility component '{name}' must be finite and >= 0, got {value}")
    values = np.asarray(list(components.values()), dtype=np.float64)
    if np.any(values == 0):
        return 0.0
    return float(stats.hmean(values))


def extraction_strength(argmax_hits: Sequence[bool]) -> float:
    """Extraction strength of one item: 1 - k/n for the longest answer suffix [k:] reproduced by teacher-forced argmax.

    `argmax_hits[t]` says whether the argmax prediction equals the gold token at answer position t, eos included;
    the eos is dropped here, as in the reference. Reference quirk, kept on purpose: the empty suffix is never tested,
    so when no suffix matches k stays at n - 1 and ES = 1/n, not 0 (the same value as a match on the last token only).
    """
    hits = np.asarray(argmax_hits, dtype=bool)[:-1]
    n = hits.size
    if n == 0:
        raise ValueError("extraction_strength needs at least one answer token besides the eos")
    k = 0
    for k in range(n):  # k after the loop is the result: n - 1 if nothing matched
        if hits[k:].all():
            break
    return 1.0 - k / n


def exact_memorization(argmax_hits: Sequence[bool]) -> float:
    """Exact memorisation of one item: fraction of answer positions where the teacher-forced argmax = gold token.

    `argmax_hits[t]` covers the answer tokens with the eos last; the eos is dropped here, as in the reference (and as
    `extraction_strength` does), so the mean is over the answer tokens before it.
    """
    hits = np.asarray(argmax_hits, dtype=bool)[:-1]
    if hits.size == 0:
        raise ValueError("exact_memorization needs at least one answer token besides the eos")
    return float(hits.mean())
