"""What every trainer shares: range checks of the optimiser settings, TrainingArguments, checkpoints and the logged
history."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from flat_pipeline.config import ParameterError, check_choice, check_number
from flat_pipeline.models.portable import make_portable

History = dict[str, list[dict[str, float]]]

# Config fields passed to `transformers.TrainingArguments` under the same name.
_SHARED_ARGUMENTS = (
    "learning_rate", "adam_beta1", "adam_beta2", "weight_decay", "warmup_steps", "lr_scheduler_type",
    "num_train_epochs", "per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm", "seed",
    "logging_steps", "bf16", "fp16",
)  # fmt: skip
# Schedules that need settings our configs do not pass: the min-lr cosines need `min_lr_rate` (only
# FinetuneConfig has it), warmup_stable_decay needs `num_decay_steps`; transformers would refuse them at train time.
NEEDS_MIN_LR = ("cosine_with_min_lr", "cosine_warmup_with_min_lr")
NOT_SUPPORTED = ("warmup_stable_decay",)


def scheduler_names(with_min_lr: bool) -> list[str]:
    """transformers' `SchedulerType` values a config can use."""
    from transformers.trainer_utils import SchedulerType

    excluded = NOT_SUPPORTED if with_min_lr else NOT_SUPPORTED + NEEDS_MIN_LR
    return [kind.value for kind in SchedulerType if kind.value not in excluded]


def check_optimizer_settings(config: Any, block: str, with_min_lr: bool = False) -> None:
    """Range checks of the settings FinetuneConfig and UnlearnConfig share; ParameterError names `<block>.<name>`.

    Without them a learning rate of 0 or 0 epochs "succeed" and save a copy of the start model, and a batch size of 0
    fails deep inside torch without naming the parameter.
    """
    check_number(f"{block}.learning_rate", config.learning_rate, above=0)
    for name in ("adam_beta1", "adam_beta2"):
        check_number(f"{block}.{name}", getattr(config, name), minimum=0, below=1)
    check_number(f"{block}.weight_decay", config.weight_decay, minimum=0)
    check_number(f"{block}.max_grad_norm", config.max_grad_norm, minimum=0)  # 0: no clipping
    check_number(f"{block}.divergence_factor", config.divergence_factor, above=1)
    check_number(f"{block}.loss_limit", config.loss_limit, above=0)
    warmup = config.warmup_steps
    check_number(f"{block}.warmup_steps", warmup, minimum=0)
    if warmup >= 1 and not float(warmup).is_integer():  # transformers would truncate 2.5 steps to 2
        raise ParameterError(
            f"parameter {block}.warmup_steps: expected a share in [0, 1) or a whole number of steps, got {warmup!r}"
        )
    if not with_min_lr and config.lr_scheduler_type in NEEDS_MIN_LR:
        raise ParameterError(
            f"parameter {block}.lr_scheduler_type: {config.lr_scheduler_type!r} needs a min_lr_rate, which {block} "
            f"has no setting for; use 'cosine' or 'linear'"
        )
    check_choice(f"{block}.lr_scheduler_type", config.lr_scheduler_type, scheduler_names(with_min_lr))
    check_number(f"{block}.num_train_epochs", config.num_train_epochs, above=0)
    for name in ("per_device_train_batch_size", "gradient_accumulation_steps", "logging_steps", "max_length"):
        check_number(f"{block}.{name}", getattr(config, name), minimum=1, integer=True)
    check_number(f"{block}.effective_batch_size", config.effective_batch_size, minimum=1, integer=True, optional=True)
    check_number(f"{block}.seed", config.seed, minimum=0, below=2**32, integer=True)  # numpy's seed range


def check_max_length(model: Any, max_length: int, parameter: str) -> None:
    """A `max_length` the model can take: at most its positions (`max_position_embeddings`), where it says."""
    positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ParameterError(
            f"parameter {parameter}: {max_length} is more tokens than the model has positions ({positions}, "
            f"max_position_embeddings in its config.json); set it to at most {positions}"
        )


def training_arguments(config: Any, output_dir: str, **overrides: Any) -> Any:
    """`TrainingArguments` from a config: its optimiser and schedule fields (our callback streams the curves)."""
    from transformers import TrainingArguments

    kwargs = {name: getattr(config, name) for name in _SHARED_ARGUMENTS}
    kwargs.update(
        output_dir=output_dir,
        data_seed=config.seed,
        report_to="none",  # our callback streams the curves into the run (training/tracking.py)
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda_available(),  # pinned memory speeds only host-to-GPU copies; torch warns on CPU
        # bars only on a terminal: in a log file every redraw piles up; then the Trainer prints one line per log step
        disable_tqdm=not sys.stderr.isatty(),
    )
    if in_launched_process() and not _cuda_available():
        kwargs.update(use_cpu=True, ddp_backend="gloo")  # launched processes on a machine without GPUs
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def with_effective_batch(config: Any, processes: int, block: str) -> Any:
    """`config` with the per-device batch and gradient accumulation that make its `effective_batch_size` (the
    examples of one optimiser step over all processes) on `processes` processes; `config` itself when it sets none.

    `per_device_train_batch_size` is then the most one device takes: the accumulation is the fewest steps that keep
    each device at or under it, the per-device batch what those steps share. The same settings thus give the same
    optimiser steps on 1, 2 or 8 GPUs; the same call in each launched process gives the same answer."""
    from dataclasses import replace

    effective = config.effective_batch_size
    if effective is None:
        return config
    per_process, remainder = divmod(effective, processes)
    if remainder:
        raise ParameterError(
            f"parameter {block}.effective_batch_size: {effective} examples per step cannot be shared equally by "
            f"{processes} processes ({block.partition('.')[0]}.launch.num_processes); use a multiple of {processes}"
        )
    accumulation = math.ceil(per_process / config.per_device_train_batch_size)
    while per_process % accumulation:
        accumulation += 1
    return replace(config, per_device_train_batch_size=per_process // accumulation,
                   gradient_accumulation_steps=accumulation)  # fmt: skip


def batch_record(config: Any, processes: int) -> dict[str, int]:
    """How a training's optimiser steps are made (MLflow parameters `train/<job>/...`)."""
    per_device, accumulation = config.per_device_train_batch_size, config.gradient_accumulation_steps
    return {
        "num_processes": processes,
        "per_device_train_batch_size": per_device,
        "gradient_accumulation_steps": accumulation,
        "effective_batch_size": per_device * accumulation * processes,
    }


def process_count() -> int:
    """How many processes train together: `accelerate launch`'s WORLD_SIZE in a launched process, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def in_launched_process() -> bool:
    """True in one of several processes started by `accelerate launch` (flat_pipeline.training.worker)."""
    return process_count() > 1


def is_main_process() -> bool:
    """The process that writes shared files: the only one, or rank 0 of launched ones."""
    return int(os.environ.get("RANK", "0")) == 0


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


def save_trained(trainer: Any, tokenizer: Any, path: str) -> None:
    """The trained model (shards gathered by the Trainer) and its tokenizer, written by the main process."""
    trainer.save_model(path)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(path)
        make_portable(path)
