"""Kedro hooks of the project (registered in settings.py): checks before a run starts, the run's model settings for
every model the catalog loads, and MLflow run bookkeeping."""

from .model_settings import ModelSettingsHook
from .preflight import PreflightHook
from .run_status import RunStatusHook

__all__ = ["ModelSettingsHook", "PreflightHook", "RunStatusHook"]
