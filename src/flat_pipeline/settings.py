"""Kedro project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from kedro.config import OmegaConfigLoader

from flat_pipeline.hooks import ModelSettingsHook, PreflightHook, RunStatusHook

# Checks before any node runs (parameters, saved inputs); the run's model.dtype / attn_implementation for every model
# the catalog loads; then MLflow run status and tags around kedro-mlflow's run.
HOOKS = (PreflightHook(), ModelSettingsHook(), RunStatusHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single keys (`data_prep.synthetic.n_authors`), not whole top-level blocks.
    "merge_strategy": {"parameters": "soft"},
}
