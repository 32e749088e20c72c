"""Membership-inference attacks and privleak, as open-unlearning defines them (benchmarks-and-metrics.md §1.4, §8).

Scores are loss-like, as in the reference: higher means the item looks less like a training member. Each item's
`logprobs` is log p(token) over its answer tokens, the last one being the eos.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def _as_1d(values: Sequence[float], exclude_eos: bool = False) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D sequence of per-token values, got shape {array.shape}")
    if exclude_eos:
        array = array[:-1]
    if array.size == 0:
        raise ValueError("expected at least one answer token" + (" besides the eos" if exclude_eos else ""))
    return array


def loss_score(logprobs: Sequence[float]) -> float:
    """LOSS attack: mean negative log-likelihood of the answer tokens."""
    return float(-_as_1d(logprobs).mean())


def zlib_score(logprobs: Sequence[float], text: str) -> float:
    """ZLib attack: LOSS divided by the zlib-compressed length of the text, so that easy-to-predict text scores less.

    `text` is what was scored, as open-unlearning takes it: the scored tokens decoded, special tokens left out.
    """
    return loss_score(logprobs) / len(zlib.compress(text.encode("utf-8")))


def _lowest_k_mean(values: Sequence[float], k: float, exclude_eos: bool) -> float:
    # -mean of the lowest max(1, int(k * n)) values, n counted after dropping the eos when asked.
    array = _as_1d(values, exclude_eos)
    count = max(1, int(k * array.size))
    return float(-np.sort(array)[:count].mean())


def min_k_score(logprobs: Sequence[float], k: float = 0.4, exclude_eos: bool = True) -> float:
    """Min-K% attack: -mean of the lowest k fraction of token log-probs (eos dropped, as privleak does)."""
    return _lowest_k_mean(logprobs, k, exclude_eos)


def min_k_plus_plus_score(z_scores: Sequence[float], k: float = 0.4, exclude_eos: bool = True) -> float:
    """Min-K%++ attack: Min-K% on per-token z = (log p(x_t) - μ_t) / σ_t, with μ_t, σ_t over the vocabulary at t.

    The caller computes z from the full next-token distribution; this only selects and averages.
    """
    return _lowest_k_mean(z_scores, k, exclude_eos)


# name -> score of one item, given a mapping with "logprobs", "text" and "z_scores", and the Min-K fraction k.
# A new attack is one score function above plus one entry here.
MIA_ATTACKS: dict[str, Callable[[Mapping[str, Any], float], float]] = {
    "loss": lambda item, k: loss_score(item["logprobs"]),
    "zlib": lambda item, k: zlib_score(item["logprobs"], item["text"]),
    "min_k": lambda item, k: min_k_score(item["logprobs"], k),
    "min_k_plus_plus": lambda item, k: min_k_plus_plus_score(item["z_scores"], k),
}


def mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """ROC-AUC of telling forget (label 0) from holdout (label 1) by score; near 1 while forget items are members."""
    if len(forget_scores) == 0 or len(holdout_scores) == 0:
        raise ValueError(
            f"mia_auc needs scores on both sides, got {len(forget_scores)} forget and {len(holdout_scores)} holdout"
        )
    labels = np.concatenate([np.zeros(len(forget_scores)), np.ones(len(holdout_scores))])
    scores = np.concatenate([np.asarray(forget_scores, dtype=np.float64), np.asarray(holdout_scores, dtype=np.float64)])
    return float(roc_auc_score(labels, scores))


def privleak(auc: float, reference_auc: float | None) -> float:
    """Relative gap in 1 - AUC to the retain model, in percent: about -100 before unlearning, 0 at the retain model,
    positive when over-unlearned.

    Without a reference the reference implementation falls back to AUC 0.5, and its 1e-10 in the denominator makes a
    model with AUC 1 give -99.99999998 rather than -100; both are kept.
    """
    ref = 0.5 if reference_auc is None else reference_auc
    return ((1.0 - auc) - (1.0 - ref)) / ((1.0 - ref) + 1e-10) * 100.0
