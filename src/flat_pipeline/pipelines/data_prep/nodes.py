"""Nodes of the data_prep pipeline."""

from __future__ import annotations

import logging
from typing import Any

from datasets import Dataset, DatasetDict, Features, Value

from flat_pipeline.data.sources import UnlearningSplits, check_disjoint, load_source, resolve_roles

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
    splits = load_source(params["source"], params.get("path"), params.get("synthetic"))
    roles = _roles(params, list(splits))
    if roles.retain:
        check_disjoint(splits[roles.forget], splits[roles.retain], roles)
    logger.info(
        "benchmark '%s': %d splits, %d rows; forget=%s retain=%s holdout=%s",
        params["source"],
        len(splits),
        sum(len(rows) for rows in splits.values()),
        roles.forget,
        roles.retain,
        roles.holdout,
    )
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})


def _as_role(dataset: Dataset) -> Dataset:
    renames = {
        old: new
        for old, new in _COLUMN_RENAMES.items()
        if old in dataset.column_names and new not in dataset.column_names
    }
    return dataset.rename_columns(renames) if renames else dataset


def select_unlearning_sets(benchmark: DatasetDict, params: dict[str, Any]) -> tuple[Dataset, Dataset, Dataset]:
    """The forget, retain and holdout sets; a role the source does not fill is an empty set.

    Args:
        benchmark: every split of the source.
        params: `data_prep` parameters.

    Returns:
        forget_set, retain_set, holdout_set.
    """
    roles = _roles(params, list(benchmark))
    forget = _as_role(benchmark[roles.forget])

    def optional(name: str | None) -> Dataset:
        if name:
            return _as_role(benchmark[name])
        empty = {"question": [], "answer": []}
        return Dataset.from_dict(empty, features=Features({c: Value("string") for c in empty}))

    return forget, optional(roles.retain), optional(roles.holdout)
