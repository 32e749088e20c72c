"""Nodes of the finetune pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from datasets import Dataset, DatasetDict

from flat_pipeline.models.loading import ModelBundle, build_base_model, check_model_params, load_tokenizer
from flat_pipeline.models.tokenizer import train_bpe_tokenizer
from flat_pipeline.training.finetune import FinetuneConfig, exact_match_rate, finetune

logger = logging.getLogger(__name__)


def _training_rows(split: Dataset) -> list[dict[str, str | None]]:
    """QA rows keep their question; raw texts (passages, MUSE documents) train as text with no prompt."""
    if "question" in split.column_names and "answer" in split.column_names:
        return [{"question": r["question"], "answer": r["answer"]} for r in split]
    if "text" in split.column_names:
        return [{"question": None, "answer": r["text"]} for r in split]
    raise ValueError(f"training split with columns {split.column_names}: expected question/answer or text")


def _item_keys(split: Dataset) -> tuple[set[str], set[str]]:
    """Authors (where rows name one) and questions of a split: what marks its items in other splits."""
    authors = set(split["author"]) if "author" in split.column_names else set()
    questions = set(split["question"]) if "question" in split.column_names else set()
    return authors, questions


def build_training_sets(
    benchmark: DatasetDict, forget_set: Dataset, holdout_set: Dataset, params: dict[str, Any]
) -> tuple[Dataset, Dataset]:
    """The original model's training data and the retain model's (the same minus every forget item).

    Args:
        benchmark: every split of the source.
        forget_set: the forget split; its authors (where rows name one) and its questions leave the retain data.
        holdout_set: never trained on; its authors and questions leave both sets (e.g. their passages).
        params: `finetune` parameters; `train_splits` names the benchmark splits to train on.

    Returns:
        original_train_set, retain_train_set.
    """
    missing = [name for name in params["train_splits"] if name not in benchmark]
    if missing:
        raise ValueError(
            f"parameter finetune.train_splits: split(s) {missing} not in the benchmark; available: {sorted(benchmark)}"
        )
    rows, authors = [], []
    for name in params["train_splits"]:
        split = benchmark[name]
        rows += _training_rows(split)
        authors += split["author"] if "author" in split.column_names else [None] * len(split)
    forget_authors, forget_questions = _item_keys(forget_set)
    holdout_authors, holdout_questions = _item_keys(holdout_set)

    def member_of(row: dict[str, Any], author: str | None, split_authors: set[str], questions: set[str]) -> bool:
        return author in split_authors or row["question"] in questions

    original, retain = [], []
    for row, author in zip(rows, authors, strict=True):
        if member_of(row, author, holdout_authors, holdout_questions):
            continue
        original.append(row)
        if not member_of(row, author, forget_authors, forget_questions):
            retain.append(row)
    logger.info("training data: original %d rows, retain %d rows", len(original), len(retain))
    return Dataset.from_list(original), Dataset.from_list(retain)


def prepare_tokenizer(original_train_set: Dataset, model_params: dict[str, Any]) -> Any:
    """The tokenizer both models share: trained on the training text (tiny_llama) or the pretrained model's own."""
    check_model_params(model_params)
    if model_params["source"] == "pretrained":
        return load_tokenizer(model_params["name_or_path"])
    texts = [
        f"{row['question']} {row['answer']}" if row["question"] is not None else row["answer"]
        for row in original_train_set
    ]
    tokenizer = train_bpe_tokenizer(texts, **model_params.get("tokenizer", {}))
    logger.info("trained a BPE tokenizer of %d tokens", len(tokenizer))
    return tokenizer


def finetune_model(
    train_set: Dataset, tokenizer: Any, model_params: dict[str, Any], finetune_params: dict[str, Any]
) -> tuple[ModelBundle, dict[str, Any]]:
    """Finetune a fresh base model on `train_set`.

    Returns:
        The trained model with its tokenizer, and its metric history (loss, learning rate, gradient norm, and the
        teacher-forced exact match on the QA rows it trained on).
    """
    config = FinetuneConfig.from_params(finetune_params["training"])
    if finetune_params.get("num_threads"):
        torch.set_num_threads(finetune_params["num_threads"])
    bundle = build_base_model(model_params, tokenizer)
    n_params = sum(p.numel() for p in bundle.model.parameters())
    logger.info("finetuning a %.2fM-parameter model on %d rows", n_params / 1e6, len(train_set))
    started = time.perf_counter()
    bundle, history = finetune(bundle, train_set, config, model_params["prompt_format"])
    seconds = time.perf_counter() - started
    exact_match = exact_match_rate(bundle, train_set, model_params["prompt_format"], config.max_length)
    logger.info("finetune took %.0f s; teacher-forced exact match on its QA: %.4f", seconds, exact_match)
    last_step = history["train_loss"][-1]["step"] if history["train_loss"] else 0
    history["train_exact_match"] = [{"step": last_step, "value": exact_match}]
    history["train_seconds"] = [{"step": last_step, "value": seconds}]
    return bundle, history
