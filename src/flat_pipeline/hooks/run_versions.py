"""A run reads what it wrote: every versioned dataset a `kedro run` saves is loaded, later in that run, at the version
that run saved, never at a newer one another run saved meanwhile; and what it only reads, at the newest version when it
started.

Kedro gives every dataset of a run one save version (the session id, a timestamp), but loads a dataset without a
pinned version at its newest version. Two runs started a few seconds apart in one project then mix: the first run's
evaluation loads the second run's model if that one was saved first. Before the pipeline runs, this hook pins the
load version of each versioned dataset the pipeline writes (with its transcoded views, e.g. `base_model@folder`
beside `base_model@model`) to the run's save version, through the catalog's own versioned copies, and of each dataset
it only reads to the newest version saved when it starts. `--load-versions` wins over both. An input with no version
yet when the run starts (an optional one, such as `retain_reference`) is looked up when it is loaded.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset, Version
from kedro.pipeline import Pipeline

logger = logging.getLogger(__name__)


def _base_name(dataset: str) -> str:
    return dataset.split("@", 1)[0]


def written_datasets(pipeline: Pipeline, names: list[str]) -> list[str]:
    """The catalog entries among `names` that `pipeline` writes, with every transcoded view of them."""
    written = {_base_name(name) for name in pipeline.all_outputs()}
    return [name for name in names if _base_name(name) in written]


def _versioned(dataset: Any) -> bool:
    """A dataset saved in versions: kedro-mlflow's artifact datasets subclass the dataset they wrap, versioned or not,
    so the class alone does not say."""
    return isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None


def _pin(catalog: Any, name: str, version: str) -> None:
    catalog_logger = logging.getLogger("kedro.io.data_catalog")
    previous = catalog_logger.level
    catalog_logger.setLevel(logging.ERROR)  # "Replacing dataset": the replacement is the same entry, pinned
    try:
        catalog[name] = catalog.get(name, version=Version(version, catalog.get(name).resolve_save_version()))
    finally:
        catalog_logger.setLevel(previous)


def pin_to_save_version(catalog: Any, names: list[str]) -> list[str]:
    """Pin the load version of each versioned dataset among `names` to its save version (the run's); returns the
    names pinned."""
    pinned = []
    for name in names:
        dataset = catalog.get(name)
        if _versioned(dataset):
            _pin(catalog, name, dataset.resolve_save_version())
            pinned.append(name)
    return pinned


def pin_to_latest(catalog: Any, names: list[str]) -> list[str]:
    """Pin the load version of each versioned dataset among `names` that has a saved version to the newest one now,
    so that a version another run saves while this one runs is not read; returns the names pinned."""
    pinned = []
    for name in names:
        dataset = catalog.get(name)
        if _versioned(dataset) and not dataset._version.load and dataset.exists():
            _pin(catalog, name, dataset.resolve_load_version())
            pinned.append(name)
    return pinned


class RunVersionsHook:
    """Pins what a run writes to what it reads back (module docstring); a run that fails says which of its versions
    it had already saved, as those are now the latest that later runs load."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._saved: dict[str, str] = {}

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        if _versioned(dataset):
            self._saved[_base_name(dataset_name)] = dataset.resolve_save_version()

    @hook_impl
    def on_pipeline_error(self, error: Exception) -> None:
        if self._saved:
            saved = ", ".join(f"{name} ({version})" for name, version in self._saved.items())
            logger.error(
                "this run failed (%s) after saving %s: these are now the latest versions, which later runs load. Run "
                "it again, or load the previous ones with --load-versions=<dataset>:<version>.",
                type(error).__name__, saved,
            )  # fmt: skip
        self._catalog, self._saved = None, {}

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._catalog, self._saved = None, {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._catalog, self._saved = catalog, {}
        if run_params.get("only_missing_outputs"):
            # nodes whose outputs exist are skipped, so an output may not be written by this run: Kedro's rules apply
            logger.warning("--only-missing-outputs: this run loads the newest version of what it writes")
            return
        user_pinned = set(run_params.get("load_versions") or {})
        candidates = set(catalog.keys()) | set(pipeline.datasets())
        written = [name for name in written_datasets(pipeline, sorted(candidates)) if name not in user_pinned]
        pinned = pin_to_save_version(catalog, [name for name in written if name in catalog])
        read = sorted(name for name in pipeline.inputs() - set(written) - user_pinned if name in catalog)
        pinned_inputs = pin_to_latest(catalog, read)
        logger.debug("run %s reads back its own versions of %s and the versions of %s saved when it started",
                     run_params.get("run_id"), pinned, pinned_inputs)  # fmt: skip
