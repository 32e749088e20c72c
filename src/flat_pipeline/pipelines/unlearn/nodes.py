"""Nodes of the unlearn pipeline."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset

from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

logger = logging.getLogger(__name__)


def unlearn_model(
    original_model: ModelBundle,
    forget_templates: Dataset,
    retain_set: Dataset,
    model_params: dict[str, Any],
    unlearn_params: dict[str, Any],
    templates_params: dict[str, Any],
) -> tuple[ModelBundle, dict[str, Any]]:
    """Unlearn the forget answers from the original model with the configured method (FLAT by default).

    Args:
        original_model: the finetuned model (loaded fresh from the catalog; it is trained in place).
        forget_templates: prompt, forget answer and template candidates per forget item.
        retain_set: retain QA; read only by methods that need retain data (not FLAT).
        model_params: `model` parameters (the prompt format).
        unlearn_params: `unlearn` parameters (method, its settings, optimiser, epochs, ...).
        templates_params: `templates` parameters (pairing and seed of the template candidates).

    Returns:
        The unlearned model, and its per-step history: loss, learning rate and the method's own terms.

    Raises (so Kedro saves no model version): FloatingPointError at a non-finite loss or gradient norm,
    TrainingError for a collapsed model, CheckpointMismatch when `unlearn.output_dir` holds another training's
    checkpoints.
    """
    config = UnlearnConfig.from_params({**unlearn_params, "pairing": templates_params["pairing"]})
    # one line that says what this run trains with (divergence and score matter to FLAT only)
    logger.info(
        "unlearn starts: method=%s divergence=%s score=%s learning_rate=%g epochs=%g batch_size=%d",
        config.method,
        config.divergence,
        config.score,
        config.learning_rate,
        config.num_train_epochs,
        config.per_device_train_batch_size,
    )
    prompt = PromptFormat.from_params(model_params)
    # the curves stream into the MLflow run as train/unlearn/loss, train/unlearn/forget_score, ... while it trains
    return unlearn(original_model, forget_templates, config, prompt, retain_rows=retain_set, track_as="unlearn")
