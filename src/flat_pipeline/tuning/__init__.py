"""Tuning every unlearning method by one rule (Optuna): search spaces, the selection rule, the worker loop and the
report that reads the storage."""

from flat_pipeline.tuning.rule import SelectionRule
from flat_pipeline.tuning.space import Dimension, method_space
from flat_pipeline.tuning.study import TrialData, TuneConfig, open_storage, run_worker, study_name, trial_records

__all__ = [
    "Dimension",
    "SelectionRule",
    "TrialData",
    "TuneConfig",
    "method_space",
    "open_storage",
    "run_worker",
    "study_name",
    "trial_records",
]
