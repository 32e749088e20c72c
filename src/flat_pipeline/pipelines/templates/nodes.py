"""Nodes of the templates pipeline."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from flat_pipeline.models.loading import LOAD_SETTINGS
from flat_pipeline.templates import build_template_candidates

logger = logging.getLogger(__name__)


def build_forget_templates(
    forget_set: Dataset,
    params: dict[str, Any],
    model_params: dict[str, Any] | None = None,
    base_model_folder: str | None = None,
) -> Dataset:
    """Pair every forget item with its candidate template answers.

    Args:
        forget_set: forget items with `question` and `answer`.
        params: `templates` parameters (source, candidates_per_item, pairing, seed, ...).
        model_params: `model` parameters: the dtype and attention that `templates.generated.model` loads with.
        base_model_folder: the run's saved base model, which generates the templates when `templates.generated.model`
            is null (None: none saved).

    Returns:
        One row per forget item: `prompt`, `forget_answer`, `template_answers`.
    """
    missing = {"question", "answer"} - set(forget_set.column_names)
    if missing:
        raise ValueError(
            f"dataset forget_set: templates need fields 'question' and 'answer'; "
            f"missing {sorted(missing)} (has {forget_set.column_names})"
        )
    load = {key: (model_params or {})[key] for key in LOAD_SETTINGS if (model_params or {}).get(key) is not None}
    candidates = build_template_candidates(
        forget_set["question"], params, load=load, answers=forget_set["answer"], base_model=base_model_folder
    )
    distinct = len({answer for row in candidates for answer in row})
    logger.info(
        "templates '%s': %d forget items, %d candidates each, %d distinct answers",
        params["source"],
        len(candidates),
        params["candidates_per_item"],
        distinct,
    )
    return Dataset.from_dict(
        {
            "prompt": forget_set["question"],
            "forget_answer": forget_set["answer"],
            "template_answers": candidates,
        }
    )
