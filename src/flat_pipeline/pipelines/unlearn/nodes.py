"""Nodes of the unlearn pipeline."""

from __future__ import annotations

from typing import Any

from datasets import Dataset

from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.training.flat import FLATConfig, unlearn_flat


def unlearn_model(
    original_model: ModelBundle,
    forget_templates: Dataset,
    model_params: dict[str, Any],
    unlearn_params: dict[str, Any],
    templates_params: dict[str, Any],
) -> tuple[ModelBundle, dict[str, Any]]:
    """Unlearn the forget answers from the original model with FLAT.

    Args:
        original_model: the finetuned model (loaded fresh from the catalog; it is trained in place).
        forget_templates: prompt, forget answer and template candidates per forget item.
        model_params: `model` parameters (the prompt format).
        unlearn_params: `unlearn` parameters (divergence, score, optimiser, epochs, ...).
        templates_params: `templates` parameters (pairing and seed of the template candidates).

    Returns:
        The unlearned model, and its per-step history: loss, mean template and forget scores, learning rate.
    """
    config = FLATConfig.from_params(
        {**unlearn_params, "pairing": templates_params["pairing"], "seed": unlearn_params.get("seed", 0)}
    )
    return unlearn_flat(original_model, forget_templates, config, model_params["prompt_format"])
