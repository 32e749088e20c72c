"""Kedro hooks of the project (registered in settings.py): checks before a run starts, the run's own versions of what
it writes, the run's model settings for every model the catalog loads, and MLflow run bookkeeping."""

from .method_runs import MethodRunsHook
from .model_settings import ModelSettingsHook
from .preflight import PreflightHook
from .run_status import RunStatusHook
from .run_tags import RunTagsHook
from .run_versions import RunVersionsHook
from .shared_experiment import SharedExperimentHook

__all__ = [
    "MethodRunsHook",
    "ModelSettingsHook",
    "PreflightHook",
    "RunStatusHook",
    "RunTagsHook",
    "RunVersionsHook",
    "SharedExperimentHook",
]
