"""Nodes of the finetune pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from flat_pipeline.data.training_sets import build_training_sets as split_training_rows
from flat_pipeline.data.training_sets import corpus_rows
from flat_pipeline.models.loading import ModelBundle, base_tokenizer, make_base_model
from flat_pipeline.prompts import PromptFormat, training_text
from flat_pipeline.training.finetune import finetune_from_params


def build_training_sets(
    benchmark: DatasetDict,
    forget_set: Dataset,
    holdout_set: Dataset,
    params: dict[str, Any],
    data_prep_params: dict[str, Any] | None = None,
) -> tuple[Dataset, Dataset]:
    """The original model's training data and the retain model's (the same minus every forget item).

    Args:
        benchmark: every split of the source.
        forget_set: its items (by author where rows name one, else by question) leave the retain data.
        holdout_set: never trained on; its items (e.g. the holdout authors' passages) leave both sets.
        params: `finetune` parameters; `train_splits` names the benchmark splits to train on.
        data_prep_params: `data_prep` parameters; a train split named as its `forget_split` (MUSE's raw forget
            text, HP's forget QA) is left out of the retain data whole.

    Returns:
        original_train_set, retain_train_set.
    """
    forget_split = (data_prep_params or {}).get("forget_split")
    return split_training_rows(benchmark, params["train_splits"], forget_set, holdout_set, forget_split)


def prepare_tokenizer(benchmark: DatasetDict, model_params: dict[str, Any]) -> Any:
    """The tokenizer both models share: a BPE trained on the text of every split (tiny_llama), or the pretrained
    model's own (a GGUF file's, read without its weights).

    Every author's text, holdout authors' included, counts once: fitted on the original model's training text alone,
    forget names were 2 tokens and holdout names about 6, and the never-trained retain model told forget from
    holdout by tokenisation (Min-K% AUC 0.93). Holdout text here is no leak to the membership attacks: a tokenizer
    only sets how text is cut, as a pretrained model's tokenizer was fitted on a corpus of members and non-members
    alike; the model never trains on the holdout rows, and their new tokens' embeddings stay untrained, as do a
    forget name's in the retain model.

    The BPE learns from the texts exactly as the model sees them (prompt format included): trained on bare questions,
    it split `Question:` and `Answer:` into 11 pieces and left a lone space before every question.
    """
    prompt = PromptFormat.from_params(model_params)
    texts = (
        row["answer"] if row["question"] is None else training_text(row["question"], row["answer"], prompt)
        for row in corpus_rows(benchmark)
    )
    return base_tokenizer(model_params, texts)


def prepare_base_model(tokenizer: Any, model_params: dict[str, Any]) -> tuple[ModelBundle, dict[str, Any]]:
    """The model both finetunes start from, saved once per run as a version of `base_model`: the tiny Llama built
    on `tokenizer`, the pretrained model `model.name_or_path` names, or a GGUF file's model turned into an ordinary
    folder (`model.source: gguf`). Later pipelines (templates, evaluation) load that folder.

    Returns:
        The model with its tokenizer, and its record (source, architecture, parameters; a GGUF file's SHA-256).
    """
    return make_base_model(model_params, tokenizer)


def finetune_model(
    train_set: Dataset,
    base_model: ModelBundle,
    model_params: dict[str, Any],
    finetune_params: dict[str, Any],
    role: str,
) -> tuple[ModelBundle, dict[str, Any]]:
    """Finetune the base model (a fresh copy, loaded from its saved version) on `train_set`.

    With `finetune.training.output_dir` set, the `role` model's checkpoints go to `<output_dir>/<role>`, and a
    killed run resumes from there (only a run of the same configuration, data and start model).

    Raises (so Kedro saves no model version): FloatingPointError at a non-finite loss or gradient norm,
    TrainingError for a collapsed model or an exact match below `finetune.min_train_exact_match`,
    CheckpointMismatch when the checkpoint folder holds another training's checkpoints.

    Returns:
        The trained model with its tokenizer, and its metric history (loss, learning rate, gradient norm, the
        teacher-forced exact match on the QA rows it trained on, and the training time).
    """
    training = finetune_params["training"]
    if training.get("output_dir"):
        training = {**training, "output_dir": str(Path(training["output_dir"]) / role)}
    # the curves stream into the MLflow run as train/<role>/loss, ... while it trains
    return finetune_from_params(
        train_set,
        base_model.tokenizer,
        model_params,
        {**finetune_params, "training": training},
        track_as=role,
        base=base_model,
    )
