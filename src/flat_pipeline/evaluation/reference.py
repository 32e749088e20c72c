"""The retain model's numbers that forget_quality, privleak and forget_quality_gap compare against."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RetainReference:
    """The retain model's numbers that forget_quality and privleak compare against, and where they came from."""

    forget_split: str
    retain_model: str
    tokenizer: str | None  # None: from a reference log, which does not say (the check is skipped)
    forget_truth_ratio: list[float]  # empty where no forget_quality was asked for (MUSE, HP)
    mia_min_k: float | None  # None: privleak falls back to 0.5, as the reference does
    completion: dict[str, float] = field(default_factory=dict)  # copyright BLEU / ROUGE, for forget_quality_gap

    def check(self, forget_split: str, tokenizer: str, n_forget: int) -> None:
        """Raise if these numbers were computed for another forget split, tokenizer or forget set size."""
        problems = []
        if self.forget_split != forget_split:
            problems.append(f"forget split '{self.forget_split}', this evaluation uses '{forget_split}'")
        if self.tokenizer is not None and self.tokenizer != tokenizer:
            problems.append(f"tokenizer {self.tokenizer}, this model's is {tokenizer}")
        if self.forget_truth_ratio and len(self.forget_truth_ratio) != n_forget:
            problems.append(f"{len(self.forget_truth_ratio)} forget items, this evaluation has {n_forget}")
        if problems:
            raise ValueError(
                f"retain_reference (from {self.retain_model}) does not match this evaluation: "
                + "; ".join(problems)
                + ". Evaluate the retain model of the same split and tokenizer first."
            )

    def check_holds(self, metric_names: Sequence[str]) -> None:
        """Raise if a requested metric needs a number this reference does not hold (the retain model was evaluated
        without that metric). A reference log without a Min-K% AUC is allowed: privleak then uses 0.5, as
        open-unlearning does."""
        lacking = {
            "forget_quality": not self.forget_truth_ratio,
            "privleak": self.mia_min_k is None and self.tokenizer is not None,
            "forget_quality_gap": not self.completion,
        }
        missing = [name for name in metric_names if lacking.get(name)]
        if missing:
            raise ValueError(
                f"retain_reference (from {self.retain_model}) holds no numbers for {missing}: evaluate the retain "
                f"model with them in evaluate.metrics first (kedro run --pipelines evaluate)"
            )


def reference_from_open_unlearning(
    logs: Mapping[str, Any], forget_split: str, n_forget: int, origin: str
) -> RetainReference:
    """A retain reference from open-unlearning's evaluation log of a retain model (`TOFU_EVAL.json`): per-item
    forget truth ratios under `forget_truth_ratio.value_by_index`, and `mia_min_k.agg_value` where present.

    Raises:
        ValueError: the log lacks the truth ratios, or holds another number of forget items than the split.
    """
    by_index = logs.get("forget_truth_ratio", {}).get("value_by_index")
    if not isinstance(by_index, Mapping) or not by_index:
        raise ValueError(f"{origin}: no forget_truth_ratio.value_by_index; expected open-unlearning's TOFU_EVAL.json")
    if len(by_index) != n_forget:
        raise ValueError(
            f"{origin}: {len(by_index)} forget truth ratios, but the forget split '{forget_split}' has {n_forget} "
            f"items: the log belongs to another split"
        )

    def value(entry: Any) -> float:
        return float(entry["score"] if isinstance(entry, Mapping) else entry)

    ratios = [value(by_index[key]) for key in sorted(by_index, key=int)]
    auc = logs.get("mia_min_k", {}).get("agg_value")
    return RetainReference(forget_split, f"open-unlearning log {origin}", None, ratios, None if auc is None else auc)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary and special tokens: two models share it only if they tokenise alike."""
    payload = json.dumps(
        [sorted(tokenizer.get_vocab().items()), tokenizer.bos_token, tokenizer.eos_token], ensure_ascii=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
