"""Training curves into the MLflow run while training runs (not written after the node).

Keys read `train/<job>/<name>` (`train/original/loss`, `train/unlearn/forget_score`), so that MLflow groups them in
their own section, apart from the evaluation metrics (`unlearned.forget_quality`); evaluations while unlearning
(training/trajectory.py) read `trajectory/<metric>`, at the optimiser step. Without an MLflow run (the library used on
its own) nothing is logged. A process started by `accelerate launch` logs into the run named by
`MLFLOW_RUN_ID`, which the launching process sets (flat_pipeline.launch).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

# The Trainer's log keys and the metric names they are logged under; other keys (a method's own terms) keep theirs.
TRAINER_KEYS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}
# History names that already say what they are: `train_exact_match` is logged as `train/original/exact_match`.
_REDUNDANT_PREFIXES = ("train_", "unlearn_")
TRAJECTORY_PREFIX = "trajectory"  # evaluations while training: trajectory/forget_truth_ratio, ...


def active_run_id() -> str | None:
    """The run to log into: this process's active MLflow run, or the launching process's (`MLFLOW_RUN_ID`)."""
    try:
        import mlflow
    except ImportError:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run is not None else os.environ.get("MLFLOW_RUN_ID") or None


def metric_key(job: str, name: str) -> str:
    """`train/<job>/<name>` without a repeated `train_` / `unlearn_`."""
    for prefix in _REDUNDANT_PREFIXES:
        name = name.removeprefix(prefix)
    return f"train/{job}/{name}"


def log_training_metrics(job: str | None, values: Mapping[str, float], step: int) -> None:
    """Log the finite `values` at `step` as `train/<job>/...` into the active run; nothing without a job or run."""
    if job:
        _log_batch({metric_key(job, name): value for name, value in values.items()}, step)


def log_training_params(job: str | None, values: Mapping[str, Any]) -> None:
    """Log `values` as parameters `train/<job>/<name>` of the active run (how its optimiser steps were made: the
    process count and the batch they make); nothing without a job or run."""
    run_id = active_run_id() if job else None
    if run_id is None:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Param

    params = [Param(metric_key(job, name), str(value)) for name, value in values.items()]
    MlflowClient().log_batch(run_id, params=params, synchronous=True)


def log_trajectory_metrics(values: Mapping[str, float], step: int) -> None:
    """Log the finite `values` of a mid-training evaluation at optimiser step `step` as `trajectory/<name>` into the
    active run (its own section in MLflow, beside `train/` and the final evaluation's); nothing without a run."""
    _log_batch({f"{TRAJECTORY_PREFIX}/{name}": value for name, value in values.items()}, step)


def _log_batch(values: Mapping[str, Any], step: int) -> None:
    run_id = active_run_id()
    if run_id is None:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, step)
        for key, value in values.items()
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    if metrics:
        MlflowClient().log_batch(run_id, metrics=metrics, synchronous=True)


def curves_callback(job: str | None) -> Any:
    """A Trainer callback that logs every Trainer log entry (loss, learning rate, gradient norm and a method's own
    terms such as FLAT's `forget_score`) as it is written, from the main process only."""
    from transformers import TrainerCallback

    class TrainingCurves(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Mapping[str, Any] | None = None, **kwargs: Any):
            if not state.is_world_process_zero or not logs:
                return
            # the Trainer's end-of-run summary (train_runtime, train_loss, ...) is no curve
            values = {
                TRAINER_KEYS.get(key, key): value
                for key, value in logs.items()
                if key not in ("epoch", "total_flos") and not key.startswith("train_")
            }
            log_training_metrics(job, values, state.global_step)

    return TrainingCurves()


def log_method_defaults(params: Mapping[str, Any], resolved: Mapping[str, Any]) -> None:
    """Log as `unlearn.<name>` the method's own values of the settings that `params` leave out (SimNPO's beta 4.5),
    so that MLflow shows what ran; nothing without a run."""
    run_id = active_run_id()
    unset = {f"unlearn.{name}": str(value) for name, value in resolved.items() if name not in params}
    if run_id is not None and unset:
        from mlflow import MlflowClient
        from mlflow.entities import Param

        MlflowClient().log_batch(run_id, params=[Param(key, value) for key, value in unset.items()], synchronous=True)


def flatten(params: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """`{"unlearn.learning_rate": "1e-05", "unlearn.lora.enabled": "False", ...}`, as kedro-mlflow flattens."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = str(value)[:6000]
    return flat


def method_label(unlearn: Mapping[str, Any]) -> str:
    """`flat-kl`, `npo`, ...: the method, with FLAT's divergence."""
    method = str(unlearn.get("method", "?"))
    return f"{method}-{unlearn['divergence']}" if method == "flat" and unlearn.get("divergence") else method
