"""Which rows the original and the retain model train on."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from datasets import Dataset

from flat_pipeline.data.item_keys import item_key
from flat_pipeline.data.sources import DataValidationError

logger = logging.getLogger(__name__)


def training_rows(split: Dataset) -> list[dict[str, str | None]]:
    """QA rows keep their question (HP's prompt/response read as question/answer); raw texts (passages, MUSE
    documents, HP's book text) train as text with no prompt."""
    for question, answer in (("question", "answer"), ("prompt", "response")):
        if question in split.column_names and answer in split.column_names:
            return [{"question": r[question], "answer": r[answer]} for r in split]
    if "text" in split.column_names:
        return [{"question": None, "answer": r["text"]} for r in split]
    raise ValueError(f"training split with columns {split.column_names}: expected question/answer or text")


def corpus_rows(splits: Mapping[str, Dataset]) -> Iterator[dict[str, str | None]]:
    """Every distinct text row (QA pair or raw text) of every split, each once, in split order.

    The corpus a tokenizer is fitted on: forget, retain and holdout authors alike. Each row counts once, however many
    splits repeat it (`full`, `forget10`, `retain90`, `forget10_perturbed` hold the same pairs), so no author's
    names get more merges than another's. Splits with no text columns (MUSE's verbmem prompt/gt) are skipped: their
    text is the raw forget text's. Paraphrased and perturbed answers stay out (only evaluation scores them).
    """
    # a generator: a pretrained model's tokenizer never reads it, so its splits are never walked
    seen: set[tuple[str | None, str]] = set()
    for name, split in splits.items():
        try:
            split_rows = training_rows(split)
        except ValueError:
            logger.debug("tokenizer corpus: split %s has no text columns, skipped", name)
            continue
        for row in split_rows:
            key = (row["question"], row["answer"])
            if key not in seen:
                seen.add(key)
                yield row


def _item_keys(split: Dataset) -> tuple[set[str], set[str]]:
    """Authors (where rows name one) and normalised questions of a split: what marks its items in other splits."""
    authors = set(split["author"]) if "author" in split.column_names else set()
    questions = (
        {item_key(q) for q in split["question"] if isinstance(q, str)} if "question" in split.column_names else set()
    )
    return authors, questions


def build_training_sets(
    splits: Mapping[str, Dataset],
    train_splits: Sequence[str],
    forget: Dataset,
    holdout: Dataset,
    forget_split: str | None = None,
) -> tuple[Dataset, Dataset]:
    """The original model's rows (every `train_splits` row but holdout items) and the retain model's (the same
    without forget items). An item belongs to a split by its author, where rows name one, or by its question; every
    row of the split named `forget_split` is a forget item (raw forget text has neither author nor question).
    """
    missing = [name for name in train_splits if name not in splits]
    if missing:
        raise ValueError(
            f"parameter finetune.train_splits: split(s) {missing} not in the benchmark; available: {sorted(splits)}"
        )
    forget_keys, holdout_keys = _item_keys(forget), _item_keys(holdout)

    def member(row: dict[str, Any], author: str | None, keys: tuple[set[str], set[str]]) -> bool:
        return author in keys[0] or (row["question"] is not None and item_key(row["question"]) in keys[1])

    original, retain, removed, exact = [], [], 0, 0
    forget_questions = set(forget["question"]) if "question" in forget.column_names else set()
    for name in train_splits:
        split = splits[name]
        authors = split["author"] if "author" in split.column_names else [None] * len(split)
        for row, author in zip(training_rows(split), authors, strict=True):
            if member(row, author, holdout_keys):
                continue
            original.append(row)
            if name == forget_split or member(row, author, forget_keys):
                removed += 1
                exact += name == forget_split or author in forget_keys[0] or row["question"] in forget_questions
            else:
                retain.append(row)
    total = sum(len(splits[name]) for name in train_splits)
    _check_not_empty(train_splits, total, len(original), len(retain))
    logger.info(
        "training data: original %d rows, retain %d rows: %d forget-item rows removed from the retain data (%d of "
        "them matched only with questions normalised: Unicode NFC, whitespace, case)",
        len(original), len(retain), removed, removed - exact,
    )  # fmt: skip
    return Dataset.from_list(original), Dataset.from_list(retain)


def _check_not_empty(train_splits: Sequence[str], total: int, n_original: int, n_retain: int) -> None:
    """An empty training set would be saved and only fail when read back: refuse it, saying what removed the rows."""
    removed = f"of the {total} row(s) of these splits, {total - n_original} are holdout items"
    if n_original == 0:
        model = "original"
    elif n_retain == 0:
        model, removed = "retain", f"{removed} and {n_original} forget items"
    else:
        return
    raise DataValidationError(
        f"parameter finetune.train_splits {list(train_splits)}: the {model} model's training set is empty: {removed}; "
        f"name splits that hold rows outside the forget and holdout sets"
    )
