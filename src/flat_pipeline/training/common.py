"""What every trainer shares: TrainingArguments, checkpoints and the logged history."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

History = dict[str, list[dict[str, float]]]

# Config fields passed to `transformers.TrainingArguments` under the same name.
_SHARED_ARGUMENTS = (
    "learning_rate", "adam_beta1", "adam_beta2", "weight_decay", "warmup_steps", "lr_scheduler_type",
    "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm", "seed",
    "logging_steps", "bf16", "fp16",
)  # fmt: skip


def training_arguments(config: Any, output_dir: str, **overrides: Any) -> Any:
    """`TrainingArguments` from a config: its optimiser and schedule fields, reporting left to kedro-mlflow."""
    from transformers import TrainingArguments

    kwargs = {name: getattr(config, name) for name in _SHARED_ARGUMENTS}
    kwargs.update(
        output_dir=output_dir,
        data_seed=config.seed,
        report_to="none",  # kedro-mlflow logs the history the node returns
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _cuda_available():
        kwargs.update(use_cpu=True, ddp_backend="gloo")  # launched processes on a machine without GPUs
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def history_from_log(log_history: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> History:
    """`{name: [{"step", "value"}, ...]}` from the Trainer's log, for keys in `names` (log key -> metric name); a name
    with no finite value logged is left out (MLflow's metric history dataset refuses an empty list)."""
    history: History = {name: [] for name in names.values()}
    for entry in log_history:
        for key, name in names.items():
            if key in entry and math.isfinite(float(entry[key])):
                history[name].append({"step": int(entry["step"]), "value": float(entry[key])})
    return {name: entries for name, entries in history.items() if entries}


def checkpointing(output_dir: str | None) -> dict[str, Any]:
    """TrainingArguments for checkpoints: with an `output_dir`, a full checkpoint (weights, optimiser, scheduler,
    random states) at every epoch end, the last one kept, so that a killed run can resume; without one, none."""
    if output_dir is None:
        return {"save_strategy": "no"}
    return {"save_strategy": "epoch", "save_total_limit": 1, "save_only_model": False}


def resume_point(output_dir: str | None, resume: bool) -> str | None:
    """The last checkpoint in `output_dir` to resume from, if resuming is asked for and one exists."""
    if not resume or output_dir is None or not Path(output_dir).is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(output_dir)


def save_trained(trainer: Any, tokenizer: Any, path: str) -> None:
    """The trained model (shards gathered by the Trainer) and its tokenizer, written by the main process."""
    trainer.save_model(path)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(path)
