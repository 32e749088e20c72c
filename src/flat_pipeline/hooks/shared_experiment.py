"""The environment's MLflow experiment, created once on a tracking server that many workers start against at once.

kedro-mlflow looks the experiment up and creates it when it is missing: two workers of a job array that start together
on a new server both find it missing, and the second one's creation fails ("already exists"), killing that worker
before its first node. This hook, run before kedro-mlflow's, creates it so that a concurrent creation counts as done.
"""

from __future__ import annotations

import logging
from typing import Any

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)

# kedro-mlflow's own patterns for mlflow.yml, which it registers in its after_context_created
MLFLOW_CONFIG_PATTERNS = ["mlflow*", "mlflow*/**", "**/mlflow*"]


class SharedExperimentHook:
    @hook_impl(tryfirst=True)  # before kedro-mlflow's, which would create the experiment without this care
    def after_context_created(self, context: Any) -> None:
        from kedro.config import MissingConfigException

        loader = context.config_loader
        loader.config_patterns.setdefault("mlflow", MLFLOW_CONFIG_PATTERNS)
        try:
            config = loader["mlflow"]
        except MissingConfigException:  # kedro-mlflow's defaults: a local store
            return
        uri = str((config.get("server") or {}).get("mlflow_tracking_uri") or "")
        name = ((config.get("tracking") or {}).get("experiment") or {}).get("name")
        if name and uri.startswith(("http://", "https://")):
            ensure_experiment(uri, name)


def ensure_experiment(tracking_uri: str, name: str) -> None:
    """Create experiment `name` on the server unless it exists; one created meanwhile by another process is fine."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    if client.get_experiment_by_name(name) is not None:
        return
    try:
        client.create_experiment(name)
        logger.info("MLflow: created experiment %s on %s", name, tracking_uri)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
