"""Kedro datasets written for this project (the only Kedro-facing code outside `pipelines/`).

`HFModelDataset` and the kedro-datasets types below save atomically (`AtomicSaveMixin`): a version appears under
its final name only once complete. The kedro-datasets subclasses load on first use, as importing all of
kedro-datasets' backends (Hugging Face datasets, pandas, matplotlib) takes seconds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .atomic import AtomicSaveMixin
from .model_dataset import HFModelDataset

if TYPE_CHECKING:
    from .atomic_datasets import (
        ArrowDataset,
        CSVDataset,
        JSONDataset,
        MatplotlibDataset,
        ParquetDataset,
        TextDataset,
    )

__all__ = [
    "ArrowDataset",
    "AtomicSaveMixin",
    "CSVDataset",
    "HFModelDataset",
    "JSONDataset",
    "MatplotlibDataset",
    "ParquetDataset",
    "TextDataset",
]
_ATOMIC_DATASETS = frozenset(__all__) - {"AtomicSaveMixin", "HFModelDataset"}  # in atomic_datasets, loaded on use


def __getattr__(name: str) -> Any:
    if name in _ATOMIC_DATASETS:
        from . import atomic_datasets

        return getattr(atomic_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
