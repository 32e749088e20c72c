"""Kedro datasets written for this project (the only Kedro-facing code outside `pipelines/`).

`HFModelDataset` and the kedro-datasets types below save atomically (`AtomicSaveMixin`): a version appears under
its final name only once complete. The kedro-datasets subclasses load on first use, as importing all of
kedro-datasets' backends (Hugging Face datasets, pandas, matplotlib) takes seconds. `BenchmarkSourceDataset` puts
the benchmark's raw files in the catalog (the path data_prep reads), so that the lineage starts with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .atomic import AtomicSaveMixin
from .model_dataset import HFModelDataset, ModelFolderDataset
from .source_dataset import BenchmarkSourceDataset

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
    "BenchmarkSourceDataset",
    "CSVDataset",
    "HFModelDataset",
    "JSONDataset",
    "MatplotlibDataset",
    "ModelFolderDataset",
    "ParquetDataset",
    "TextDataset",
]
# in atomic_datasets, loaded on use
_ATOMIC_DATASETS = frozenset(__all__) - {
    "AtomicSaveMixin",
    "BenchmarkSourceDataset",
    "HFModelDataset",
    "ModelFolderDataset",
}


def __getattr__(name: str) -> Any:
    if name in _ATOMIC_DATASETS:
        from . import atomic_datasets

        return getattr(atomic_datasets, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
