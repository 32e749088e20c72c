"""The settings of an evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flat_pipeline.config import config_from_params


@dataclass
class EvaluateConfig:
    """Settings of an evaluation (`evaluate.settings` in parameters_evaluate.yml)."""

    max_new_tokens: int = 200  # greedy answers for Q_A_ROUGE, as open-unlearning
    scoring_batch_size: int = 32  # questions per forward pass (each with all its candidate answers)
    generation_batch_size: int = 64
    mia_k: float = 0.4  # Min-K% and Min-K%++ keep the lowest 40 % of token scores
    template_threshold: float = 0.5  # ROUGE-L F1 to the nearest template that makes an answer "template-like"
    completion_prompt_words: int = 30  # words of a text split given as the prompt (HP and MUSE bring their own cut)
    completion_prompt_template: str = "{prompt}"  # HP: "### Question: {prompt}\n" (FLAT's evaluate.py)
    completion_max_new_tokens: int = 128  # MUSE VerbMem: 128
    reference_quirks: bool = False  # FLAT's HP evaluation quirks (spec flat.md B13) for the copyright metrics
    knowmem_shots: int = 3  # in-context QA pairs before each KnowMem question
    knowmem_items: int | None = 100  # questions per KnowMem set (None: all)
    knowmem_max_new_tokens: int = 32
    max_items: int | None = None  # cap every QA set (None: all), e.g. TOFU's original 300
    max_length: int = 2048  # tokens of a scored text (MUSE's privleak articles), as MUSE's training length

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EvaluateConfig:
        return config_from_params(cls, params, "evaluate.settings")
