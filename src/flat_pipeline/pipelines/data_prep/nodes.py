"""Nodes of the data_prep pipeline."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from flat_pipeline.data.sources import (
    DataValidationError,
    UnlearningSplits,
    check_roles,
    load_source_files,
    resolve_roles,
)
from flat_pipeline.data.text_chunks import chunk_text, completion_pairs

logger = logging.getLogger(__name__)

# HP's forget files use prompt/response; downstream code reads question/answer (or text) everywhere.
_COLUMN_RENAMES = {"prompt": "question", "response": "answer"}


def _roles(params: dict[str, Any], available: list[str]) -> UnlearningSplits:
    return resolve_roles(
        params["source"], available, params["forget_split"], params.get("retain_split"), params.get("holdout_split")
    )


def load_benchmark(params: dict[str, Any]) -> DatasetDict:
    """Read the source, validate every split and the role choice, and return all splits.

    Args:
        params: `data_prep` parameters (source, path, forget/retain/holdout split names, synthetic world).

    Returns:
        Every split of the source by name.
    """
    splits = load_source_files(params["source"], params.get("path"), params.get("synthetic"))
    roles = _roles(params, list(splits))
    check_roles(splits, roles)
    logger.info(
        "benchmark '%s': %d splits, %d rows; forget=%s retain=%s holdout=%s",
        params["source"],
        len(splits),
        sum(len(rows) for rows, _ in splits.values()),
        roles.forget,
        roles.retain,
        roles.holdout,
    )
    return DatasetDict({name: Dataset.from_list(rows) for name, (rows, _) in splits.items()})


def load_benchmark_source(source_path: str | None, params: dict[str, Any]) -> DatasetDict:
    """`load_benchmark` on the catalog's `benchmark_source` (the path of the benchmark's files, or None).

    The path is set once, by `benchmark_path` in the environment's globals.yml or `--params data_prep.path=...`,
    and reaches both the catalog entry and the `data_prep.path` parameter; a parameter file that sets
    `data_prep.path` to another path would be ignored, so it is refused here, before anything is read.

    Args:
        source_path: the `benchmark_source` catalog entry's path.
        params: `data_prep` parameters.
    """
    param = params.get("path")
    if param is not None and (source_path is None or Path(str(param)) != Path(source_path)):
        raise ValueError(
            f"parameter data_prep.path is {param!r} but the catalog's benchmark_source reads {source_path!r}: set "
            f"the path as `benchmark_path` in conf/<env>/globals.yml (or with --params data_prep.path=...), not in "
            f"a parameters file"
        )
    return load_benchmark({**params, "path": source_path})


def _as_role(dataset: Dataset) -> Dataset:
    renames = {
        old: new
        for old, new in _COLUMN_RENAMES.items()
        if old in dataset.column_names and new not in dataset.column_names
    }
    return dataset.rename_columns(renames) if renames else dataset


def _is_text(dataset: Dataset) -> bool:
    return "text" in dataset.column_names and "question" not in dataset.column_names


def _text_chunks(params: dict[str, Any], split: str) -> dict[str, int]:
    chunks = params.get("text_chunks")
    if not chunks or not {"chunk_words", "prompt_words"} <= set(chunks):
        raise ValueError(
            f"parameter data_prep.text_chunks: split '{split}' is raw text; set chunk_words and prompt_words to cut "
            f"it into (prompt, continuation) pairs, got {chunks!r}"
        )
    return chunks


def _forget_pairs(documents: Dataset, split: str, chunks: dict[str, int]) -> Dataset:
    """The (prompt, continuation) pairs of a raw-text forget split; none at all is refused (nothing to unlearn)."""
    pairs = completion_pairs(documents["text"], chunks["chunk_words"], chunks["prompt_words"])
    if not pairs:
        longest = max(len(text.split()) for text in documents["text"])
        raise DataValidationError(
            f"split '{split}': the forget set is empty: none of its {len(documents)} document(s) has more than "
            f"prompt_words={chunks['prompt_words']} words (the longest has {longest}), so no chunk has a "
            f"continuation to forget; lower data_prep.text_chunks.prompt_words"
        )
    logger.info("forget split '%s': %d (prompt, continuation) pairs", split, len(pairs))
    return Dataset.from_list(pairs)


def select_unlearning_sets(benchmark: DatasetDict, params: dict[str, Any]) -> tuple[Dataset, Dataset, Dataset]:
    """The forget, retain and holdout sets; a role the source does not fill is an empty set.

    A raw-text forget split (MUSE) becomes (prompt, continuation) pairs of its chunks, and a raw-text retain split
    chunks of text (`data_prep.text_chunks`; see flat_pipeline.data.text_chunks for why).

    Args:
        benchmark: every split of the source.
        params: `data_prep` parameters.

    Returns:
        forget_set, retain_set, holdout_set.
    """
    roles = _roles(params, list(benchmark))
    forget = _as_role(benchmark[roles.forget])
    if _is_text(forget):
        forget = _forget_pairs(forget, roles.forget, _text_chunks(params, roles.forget))

    def optional(name: str | None) -> Dataset:
        if name:
            rows = _as_role(benchmark[name])
            if _is_text(rows) and params.get("text_chunks"):
                words = _text_chunks(params, name)["chunk_words"]
                rows = Dataset.from_dict({"text": [c for text in rows["text"] for c in chunk_text(text, words)]})
            return rows
        empty = {"question": [], "answer": []}
        return Dataset.from_dict(empty, features=Features({c: Value("string") for c in empty}))

    return forget, optional(roles.retain), optional(roles.holdout)
