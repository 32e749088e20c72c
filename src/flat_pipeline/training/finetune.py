"""Supervised finetuning (the original and the retain model) with the Hugging Face Trainer.

The Trainer's defaults memorise poorly on a tiny model (spec/feasibility §6: default betas and a schedule to 0 reached
exact match 0.35 where a tuned loop reached 0.96), so every optimiser and schedule setting is explicit here.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import InitVar, asdict, dataclass
from typing import Any

from datasets import Dataset

from flat_pipeline.batching import PadCollator
from flat_pipeline.config import check_number, config_from_params
from flat_pipeline.launch import LaunchSettings
from flat_pipeline.launch import run as run_launched
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.models.lora import LoraSettings, add_lora, finish_lora
from flat_pipeline.models.portable import make_portable
from flat_pipeline.prompts import IGNORE_INDEX, PromptFormat, PromptTooLong, encode_example
from flat_pipeline.scoring import answer_logits, score_answers
from flat_pipeline.training.checkpoints import owned_output_dir
from flat_pipeline.training.common import (
    History,
    batch_record,
    check_max_length,
    check_optimizer_settings,
    checkpointing,
    history_from_log,
    in_launched_process,
    is_main_process,
    process_count,
    save_trained,
    training_arguments,
    with_effective_batch,
)
from flat_pipeline.training.fingerprint import checkpoint_to_resume, fingerprint, start_model_identity
from flat_pipeline.training.guards import (
    DIVERGENCE_FACTOR,
    LOSS_LIMIT,
    CollapseSample,
    TrainingError,
    check_trained_model,
    first_rows,
    guarded_trainer,
)
from flat_pipeline.training.tracking import curves_callback, log_training_metrics, log_training_params

logger = logging.getLogger(__name__)

TRAINING_BLOCK = "finetune.training"
# Measured once after training (not streamed as curves): logged with the last step.
FINAL_METRICS = ("train_exact_match", "train_seconds")


@dataclass
class FinetuneConfig:
    """Hyperparameters of a finetune; names follow `transformers.TrainingArguments` where one exists."""

    learning_rate: float = 3e-3
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    weight_decay: float = 0.0
    warmup_steps: float = 20  # steps; a float in [0, 1): a share of all steps
    lr_scheduler_type: str = "cosine_with_min_lr"
    min_lr_rate: float = 0.1  # cosine decays to this fraction of learning_rate
    num_train_epochs: float = 25
    per_device_train_batch_size: int = 32  # with effective_batch_size: the most one device takes
    gradient_accumulation_steps: int = 1  # with effective_batch_size: derived
    effective_batch_size: int | None = None  # examples per optimiser step over all processes, whatever their number
    max_grad_norm: float = 1.0
    divergence_factor: float = DIVERGENCE_FACTOR  # stop when |loss| or the gradient norm grows this much over its
    loss_limit: float = LOSS_LIMIT  # running median, or |loss| passes this limit (training/guards.py)
    max_length: int = 512
    seed: int = 0
    logging_steps: int = 10
    group_by_length: bool = True  # batches of similar length: passages are 10x longer than QA pairs
    bf16: bool = False
    fp16: bool = False
    output_dir: str | None = None  # checkpoints (every epoch, the last kept); None: a temporary folder, nothing kept
    resume: bool = True  # continue from the last checkpoint in output_dir, if there is one
    block: InitVar[str] = TRAINING_BLOCK  # names the parameters in messages

    def __post_init__(self, block: str) -> None:
        check_optimizer_settings(self, block, with_min_lr=True)
        check_number(f"{block}.min_lr_rate", self.min_lr_rate, minimum=0, maximum=1)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = TRAINING_BLOCK) -> FinetuneConfig:
        """From a `finetune.training` block; unknown keys name the nearest known one."""
        return config_from_params(cls, params, block)


def min_train_exact_match(finetune_params: Mapping[str, Any]) -> float | None:
    """`finetune.min_train_exact_match`, range-checked: the floor of the finished model's teacher-forced exact match
    on its own training QA (None: no floor)."""
    floor = finetune_params.get("min_train_exact_match")
    check_number("finetune.min_train_exact_match", floor, minimum=0, maximum=1, optional=True)
    return floor


def _remedy(config: FinetuneConfig) -> str:
    return (
        f"Lower {TRAINING_BLOCK}.learning_rate (now {config.learning_rate:g}): a rate this high makes the weights "
        f"diverge or collapse."
    )


def _arguments(config: FinetuneConfig, output_dir: str) -> Any:
    return training_arguments(
        config,
        output_dir,
        lr_scheduler_kwargs={"min_lr_rate": config.min_lr_rate} if "min_lr" in config.lr_scheduler_type else {},
        train_sampling_strategy="group_by_length" if config.group_by_length else "random",
        **checkpointing(config.output_dir),
    )


def tokenize_rows(rows: Dataset, tokenizer: Any, prompt: PromptFormat, max_length: int | None) -> Dataset:
    """`input_ids`, `labels` and `length` for rows holding `answer` and `question` (None for raw text)."""

    def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            encoded = encode_example(tokenizer, row["answer"], row["question"], prompt, max_length)
        except PromptTooLong as error:
            where = f"training set, row {index}"
            raise error.naming(where, row["question"], f"{TRAINING_BLOCK}.max_length") from None
        return {"input_ids": encoded.input_ids, "labels": encoded.labels, "length": len(encoded.input_ids)}

    return rows.map(encode, with_indices=True, remove_columns=rows.column_names, desc="tokenising")


def exact_match_rate(bundle: ModelBundle, rows: Dataset, prompt: PromptFormat, max_length: int | None = None) -> float:
    """Share of QA rows whose every answer token (eos included) is the argmax: greedy decoding reproduces them."""
    qa = rows.filter(lambda row: row["question"] is not None)
    if len(qa) == 0:
        return float("nan")
    examples = [encode_example(bundle.tokenizer, row["answer"], row["question"], prompt, max_length) for row in qa]
    scores = score_answers(bundle.model, examples, bundle.tokenizer.pad_token_id)
    return sum(s.exact for s in scores) / len(scores)


def _trainer_class() -> type:
    import torch.nn.functional as F

    class FinetuneTrainer(guarded_trainer()):
        """HF Trainer whose loss sends only answer positions through the LM head (see `answer_logits`).

        The loss is the mean token cross-entropy over every answer token of the optimiser step (all accumulated
        micro-batches and devices), as the Trainer computes it for models that accept `num_items_in_batch`.
        """

        loss_is_scaled_for_ga = True

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            logits, targets = answer_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
            summed = F.cross_entropy(
                logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            if num_items_in_batch is None:
                n_targets = int((targets != IGNORE_INDEX).sum())
                loss = summed / max(n_targets, 1) / self.current_gradient_accumulation_steps
            else:
                loss = summed / num_items_in_batch
                if self.args.average_tokens_across_devices:  # gradients are averaged over processes afterwards
                    loss = loss * self.accelerator.num_processes
            # the guards read this micro-batch's mean token loss: `loss` is scaled for accumulation and processes
            self.stop_unless_finite_loss(summed / (targets != IGNORE_INDEX).sum().clamp(min=1))
            return (loss, {"logits": logits}) if return_outputs else loss

    return FinetuneTrainer


def finetune(
    bundle: ModelBundle,
    train_rows: Dataset,
    config: FinetuneConfig,
    prompt: PromptFormat | None = None,
    save_to: str | None = None,
    *,
    lora: LoraSettings | None = None,
    launch: LaunchSettings | None = None,
    track_as: str | None = None,
) -> tuple[ModelBundle, History]:
    """Train `bundle.model` on `train_rows` (in place, unless launched); returns it with its loss / learning-rate /
    gradient-norm history. With `track_as` (e.g. `original`), the curves also stream into the active MLflow run as
    `train/<track_as>/...` while training runs (flat_pipeline.training.tracking).

    `lora` (enabled): train adapters only, then merge them (or keep them, `save: adapter`). `launch` with more than
    one process: train through `accelerate launch` (flat_pipeline.launch). `save_to`: also write the trained model
    there through the Trainer, which gathers FSDP / DeepSpeed shards (every launched process must call it; the main
    one writes). Raises FloatingPointError on a non-finite loss or gradient norm, TrainingError on a collapsed model,
    and CheckpointMismatch when `config.output_dir` holds another training's checkpoints.
    """
    lora, prompt = lora or LoraSettings(), prompt or PromptFormat()
    processes = launch.num_processes if launch is not None and launch.num_processes > 1 else process_count()
    config = with_effective_batch(config, processes, "finetune.training")
    if not in_launched_process():
        log_training_params(track_as, batch_record(config, processes))
    if launch is not None and launch.num_processes > 1:  # each process comes back here without `launch`
        bundle, history = run_launched(
            "finetune", bundle, {"train": train_rows}, config, launch,
            prompt=prompt.to_params(), lora=asdict(lora), track_as=track_as,
        )  # fmt: skip
    else:
        bundle, history = _finetune_here(
            bundle, train_rows, config, prompt, save_to=save_to, lora=lora, track_as=track_as
        )
    if not in_launched_process():  # the launching process checks the whole model, not each shard of it
        sample = tokenize_rows(first_rows(train_rows), bundle.tokenizer, prompt, config.max_length)
        check_trained_model(bundle, sample["input_ids"], history, job="finetune", remedy=_remedy(config))
    return bundle, history


def _finetune_here(
    bundle: ModelBundle, train_rows: Dataset, config: FinetuneConfig, prompt: PromptFormat, *, save_to: str | None,
    lora: LoraSettings, track_as: str | None,
) -> tuple[ModelBundle, History]:  # fmt: skip
    check_max_length(bundle.model, config.max_length, f"{TRAINING_BLOCK}.max_length")
    train_set = tokenize_rows(train_rows, bundle.tokenizer, prompt, config.max_length)
    settings = {**asdict(config), "lora": asdict(lora) if lora.enabled else None}
    # only a training that keeps checkpoints compares fingerprints (the start model's files are read for it)
    current = fingerprint(settings, {"train": train_set}, start_model_identity(bundle)) if config.output_dir else {}
    # one training at a time per output_dir, held before its fingerprint is written (training/checkpoints.py)
    with owned_output_dir(config.output_dir, TRAINING_BLOCK), tempfile.TemporaryDirectory() as scratch:
        checkpoint = checkpoint_to_resume(config.output_dir, config.resume, current, TRAINING_BLOCK)
        if lora.enabled:
            bundle.model = add_lora(bundle.model, lora)
        trainer = _trainer_class()(
            model=bundle.model,
            args=_arguments(config, config.output_dir or scratch),
            train_dataset=train_set,
            data_collator=PadCollator(bundle.tokenizer.pad_token_id),
            job="finetune",
            remedy=_remedy(config),
            block=TRAINING_BLOCK,
            divergence_factor=config.divergence_factor,
            loss_limit=config.loss_limit,
            collapse_sample=CollapseSample(first_rows(train_set)["input_ids"], bundle.tokenizer.pad_token_id),
            callbacks=[curves_callback(track_as)],
        )
        if checkpoint:
            logger.info("resuming finetuning from %s", checkpoint)
        trainer.train(resume_from_checkpoint=checkpoint)
        if save_to is not None and not lora.enabled:
            save_trained(trainer, bundle.tokenizer, save_to)
    if lora.enabled:  # merged after training, saved by the main process (DDP; not FSDP / DeepSpeed)
        bundle.model = finish_lora(bundle.model, lora)
        if save_to is not None and is_main_process():
            bundle.model.save_pretrained(save_to)
            bundle.tokenizer.save_pretrained(save_to)
            make_portable(save_to)
    names = {"loss": "train_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}
    return bundle, history_from_log(trainer.state.log_history, names)


def finetune_from_params(
    train_rows: Dataset,
    tokenizer: Any,
    model_params: Mapping[str, Any],
    finetune_params: Mapping[str, Any],
    track_as: str | None = None,
    *,
    base: ModelBundle | None = None,
) -> tuple[ModelBundle, History]:
    """Finetune `base` (trained in place), or a fresh base model built from `model_params` and `tokenizer`, as
    `finetune_params` say (`track_as`: see `finetune`).

    The history gains `train_exact_match` (teacher-forced, on the QA rows trained on) and `train_seconds`. With
    `finetune.lora.enabled`, only LoRA adapters train, and the result is the merged model or the adapter
    (`finetune.lora.save`). Below `finetune.min_train_exact_match`, TrainingError: the model is not saved.
    """
    import torch

    from flat_pipeline.models.loading import build_base_model

    config = FinetuneConfig.from_params(finetune_params["training"])
    floor = min_train_exact_match(finetune_params)
    lora = LoraSettings.from_params(finetune_params.get("lora"), "finetune")
    if lora.enabled and lora.save == "adapter" and model_params["source"] != "pretrained":
        raise ValueError(
            "parameter finetune.lora.save: 'adapter' needs model.source=pretrained (an adapter is loaded onto the "
            f"base model that model.name_or_path names); use 'merged' for model.source={model_params['source']}"
        )
    launch = LaunchSettings.from_params(finetune_params.get("launch"), "finetune")
    if launch.num_processes > 1 and lora.enabled and lora.save == "adapter":
        raise ValueError("parameter finetune.lora.save: with finetune.launch.num_processes > 1, use 'merged'")
    if finetune_params.get("num_threads"):
        torch.set_num_threads(finetune_params["num_threads"])
    bundle = base if base is not None else build_base_model(model_params, tokenizer)
    n_params = sum(p.numel() for p in bundle.model.parameters())
    logger.info("finetuning a %.2fM-parameter model on %d rows", n_params / 1e6, len(train_rows))
    started = time.perf_counter()
    prompt = PromptFormat.from_params(model_params)
    bundle, history = finetune(bundle, train_rows, config, prompt, lora=lora, launch=launch, track_as=track_as)
    seconds = time.perf_counter() - started
    exact_match = exact_match_rate(bundle, train_rows, prompt, config.max_length)
    logger.info("finetune took %.0f s; teacher-forced exact match on its QA: %.4f", seconds, exact_match)
    check_exact_match_floor(exact_match, floor, config)
    last_step = history["train_loss"][-1]["step"] if history.get("train_loss") else 0
    if not math.isnan(exact_match):  # NaN: no QA rows (MUSE's raw text)
        history["train_exact_match"] = [{"step": last_step, "value": exact_match}]
    history["train_seconds"] = [{"step": last_step, "value": seconds}]
    final = {name: history[name][0]["value"] for name in FINAL_METRICS if name in history}
    log_training_metrics(track_as, final, last_step)
    return bundle, history


def check_exact_match_floor(exact_match: float, floor: float | None, config: FinetuneConfig) -> None:
    """TrainingError when the finished model reproduces less of its own training QA than `floor` asks."""
    if floor is None:
        return
    if math.isnan(exact_match):
        logger.warning("finetune.min_train_exact_match is set, but the training data hold no QA rows to measure it on")
        return
    if exact_match < floor:
        raise TrainingError(
            f"finetune: teacher-forced exact match on its own training QA is {exact_match:.4f}, below "
            f"finetune.min_train_exact_match = {floor:g}: the model has not learnt its training data, so it is not "
            f"saved. Train longer ({TRAINING_BLOCK}.num_train_epochs, now {config.num_train_epochs:g}) or change "
            f"{TRAINING_BLOCK}.learning_rate (now {config.learning_rate:g}; too high diverges, too low learns "
            f"slowly); or lower finetune.min_train_exact_match (null turns the check off)."
        )
