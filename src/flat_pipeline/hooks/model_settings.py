"""The run's `model.dtype`, `model.attn_implementation` and `model.gradient_checkpointing` for every model the catalog
loads in a run, where its entry leaves them open.

The entries of catalog.yml carry them in their `load_args` (`${params:model.dtype}`, io/config_loader.py), which
also reach a notebook's `catalog.load`. An entry without them (one added in an environment's catalog, or written
without `load_args`) would otherwise load what from_pretrained defaults to (float32, sdpa), whatever the environment
or `--params` ask for: with `--env tofu` (bfloat16) three 7B models in float32.
"""

from __future__ import annotations

import weakref
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node

from flat_pipeline.io import HFModelDataset


class ModelSettingsHook:
    """Hands the run's `model` parameters to each HFModelDataset just before it loads (`use_model_settings`).

    Just before the load, not when the catalog is made: datasets from factory patterns (`{role}_model`) exist only
    once a run first asks for them. The parameters come with the catalog, so an environment's `parameters.yml` and
    `--params` both count. A catalog entry's own `load_args` win.
    """

    def __init__(self) -> None:
        # weak: the catalog holds the run's models in memory, and this hook outlives the run (settings.HOOKS)
        self._catalog: weakref.ref[Any] | None = None
        self._model_params: dict[str, Any] = {}

    @hook_impl
    def after_catalog_created(self, catalog: Any, parameters: dict[str, Any]) -> None:
        self._remember(catalog, (parameters.get("parameters") or {}).get("model"))

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        # The run's own catalog: another may have been made since (a hook reading `context.catalog`).
        params = catalog.get("parameters")
        self._remember(catalog, (params.load() if params is not None else {}).get("model"))

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node: Node) -> None:
        catalog = self._catalog() if self._catalog is not None else None
        if catalog is None or not self._model_params:
            return
        dataset = catalog.get(dataset_name)
        if isinstance(dataset, HFModelDataset):
            dataset.use_model_settings(self._model_params)

    def _remember(self, catalog: Any, model_params: Any) -> None:
        self._catalog = weakref.ref(catalog)
        self._model_params = dict(model_params) if isinstance(model_params, dict) else {}
