"""Nodes of the import_models and import_retain_logs pipelines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from flat_pipeline.evaluation import reference_from_open_unlearning
from flat_pipeline.models.loading import ModelBundle, load_causal_lm


def import_model(import_params: dict[str, Any], model_params: dict[str, Any], role: str) -> ModelBundle:
    """Load `import_models.<role>` (a save_pretrained folder or a hub id) with the run's dtype and attention, and
    the tokenizer from `import_models.tokenizer` where given (a repository of weights only)."""
    name_or_path = import_params.get(role)
    if not name_or_path:
        raise ValueError(
            f"parameter import_models.{role}: give the {role} model's folder or hub id, e.g. "
            f"--params import_models.{role}=open-unlearning/tofu_Llama-3.2-1B-Instruct_"
            f"{'full' if role == 'original' else 'retain90'}"
        )
    return load_causal_lm(
        name_or_path,
        model_params.get("dtype", "float32"),
        model_params.get("attn_implementation", "sdpa"),
        tokenizer_name_or_path=import_params.get("tokenizer"),
        tokenizer_parameter="import_models.tokenizer",
    )


def import_retain_logs(
    import_params: dict[str, Any], forget_set: Dataset, data_prep_params: dict[str, Any]
) -> dict[str, Any]:
    """The retain reference from open-unlearning's evaluation log of the retain model, checked against the split."""
    path = import_params.get("retain_logs")
    if not path or not Path(path).is_file():
        raise ValueError(
            f"parameter import_models.retain_logs: expected the retain model's TOFU_EVAL.json from open-unlearning, "
            f"got {path!r}"
        )
    logs = json.loads(Path(path).read_text())
    reference = reference_from_open_unlearning(logs, data_prep_params["forget_split"], len(forget_set), str(path))
    return reference.__dict__
