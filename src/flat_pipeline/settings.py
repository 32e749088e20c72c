"""Kedro project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

import sys
import warnings

from omegaconf.resolvers import oc

from flat_pipeline.hooks import (
    MethodRunsHook,
    ModelSettingsHook,
    PreflightHook,
    RunStatusHook,
    RunTagsHook,
    RunVersionsHook,
    SharedExperimentHook,
)
from flat_pipeline.io.config_loader import ConfigLoader

# Checks before any node runs (parameters, saved inputs); what the run writes read back at the run's own version (never
# a concurrent run's); the run's model.dtype / attn_implementation for every model the catalog loads; then MLflow
# around kedro-mlflow's run: its status, its name, tags and catalog versions, and one nested child run per benchmark
# method. On a shared tracking server, the experiment is created once however many workers start together.
HOOKS = (
    SharedExperimentHook(),
    PreflightHook(),
    RunVersionsHook(),
    ModelSettingsHook(),
    RunStatusHook(),
    RunTagsHook(),
    MethodRunsHook(),
)

# kedro-mlflow's KedroPipelineModel has an untyped `predict`; MLflow warns so when the class is defined, on every
# `kedro run` and notebook session, about code that is not ours. MLflow turns that warning on inside the call
# (`simplefilter("once")`), so no filter reaches it: kedro-mlflow is imported here, before Kedro loads it as a plugin,
# and any other warning of the import is shown as usual.
with warnings.catch_warnings(record=True) as _caught:
    import kedro_mlflow.mlflow  # noqa: F401
for _warning in _caught:
    if "Add type hints to the `predict` method" not in str(_warning.message):
        warnings.warn_explicit(_warning.message, _warning.category, _warning.filename, _warning.lineno)

# MLflow's sqlite store uses a SQLAlchemy loader option that SQLAlchemy 2.1 deprecates, on every run's first query.
warnings.filterwarnings("ignore", message="The ``noload`` loader strategy is deprecated", module="mlflow")

# Hugging Face's progress bars (saving a dataset version, tokenising, writing and loading weights) redraw line after
# line in a log file.
if not sys.stderr.isatty():
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

# OmegaConfigLoader with `${params:...}`: the model entries of catalog.yml load with the run's `model` settings.
CONFIG_LOADER_CLASS = ConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # An environment overrides single keys (`data_prep.synthetic.n_authors`), not whole top-level blocks.
    "merge_strategy": {"parameters": "soft"},
    # `${oc.env:NAME,default}` beyond credentials: mlflow.yml's tracking URI follows MLFLOW_TRACKING_URI (a shared
    # `mlflow server` for many workers), as MLflow's own clients do
    "custom_resolvers": {"oc.env": oc.env},
}
