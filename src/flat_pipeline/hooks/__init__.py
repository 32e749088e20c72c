"""Kedro hooks of the project (registered in settings.py): checks before a run starts, and MLflow run bookkeeping."""

from .preflight import PreflightHook
from .run_status import RunStatusHook

__all__ = ["PreflightHook", "RunStatusHook"]
