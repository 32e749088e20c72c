"""Unlearning with the Hugging Face Trainer: one config and one Trainer subclass for every method in `METHODS`.

FLAT needs forget data and template answers only. The baselines read retain data and a frozen reference model when
their `Method` entry says so; nothing else is built or tokenised. Only answer positions reach the LM head
(`answer_logits`), so the cost does not grow with the full logits of every position as in the reference code
(flat.md §1.3).
"""

from __future__ import annotations

import copy
import logging
import random
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import InitVar, asdict, dataclass
from typing import Any

import torch
from datasets import Dataset

from flat_pipeline.batching import pad_batch
from flat_pipeline.config import ParameterError, check_choice, check_number, config_from_params
from flat_pipeline.launch import LaunchSettings
from flat_pipeline.launch import run as run_launched
from flat_pipeline.losses import DIVERGENCES, SCORES
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.models.lora import AdapterDisabled, LoraSettings, add_lora, finish_lora
from flat_pipeline.models.portable import make_portable
from flat_pipeline.prompts import PromptFormat, PromptTooLong, encode_example
from flat_pipeline.templates import PAIRINGS, pick_template
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
    check_trained_model,
    first_rows,
    guarded_trainer,
)
from flat_pipeline.training.methods import LOSS_FORMS, METHODS, SHARED_DEFAULTS, Method
from flat_pipeline.training.tracking import curves_callback, log_training_params
from flat_pipeline.training.trajectory import Trajectory, TrajectoryConfig

logger = logging.getLogger(__name__)


@dataclass
class UnlearnConfig:
    """Unlearning hyperparameters: the method and its own settings, then the optimiser (`TrainingArguments` names)."""

    method: str = "flat"
    # FLAT
    divergence: str = "kl"
    score: str = "logprob"  # prob: the paper's mean token probability; logprob: mean token log-probability
    code_compat: bool = False  # the reference code's batch-level probability score (flat.md §1.3)
    pairing: str = "resample"  # fixed | resample: which template candidate each epoch trains on
    # baselines; None: the method's own value (`Method.defaults`, else `SHARED_DEFAULTS`)
    loss_form: str = "paper"  # paper | open_unlearning: how kl and rmu average (methods.py docstring)
    forget_weight: float | None = None  # gamma: 1, SimNPO 0.125
    retain_weight: float = 1.0  # alpha
    beta: float | None = None  # NPO, IdkDPO 0.1; SimNPO 4.5
    delta: float | None = None  # SimNPO: 0
    rmu_layer: int = 0  # decoder layer whose output RMU steers (open-unlearning's model.layers.<rmu_layer>)
    steering_coeff: float = 2.0  # RMU
    # optimiser
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: float = 0  # steps; a float in [0, 1): a share of all steps (FLAT on HP: one of 5 epochs, 0.2)
    lr_scheduler_type: str = "constant"
    num_train_epochs: float = 5
    per_device_train_batch_size: int = 32  # with effective_batch_size: the most one device takes
    gradient_accumulation_steps: int = 1  # with effective_batch_size: derived
    effective_batch_size: int | None = None  # examples per optimiser step over all processes, whatever their number
    max_grad_norm: float = 1.0
    divergence_factor: float = DIVERGENCE_FACTOR  # stop when |loss| or the gradient norm grows this much over its
    loss_limit: float = LOSS_LIMIT  # running median, or |loss| passes this limit (training/guards.py)
    max_length: int = 512
    seed: int = 0
    logging_steps: int = 1
    bf16: bool = False
    fp16: bool = False
    output_dir: str | None = None  # checkpoints (one per epoch, the last kept); None: a temporary folder
    resume: bool = True  # continue from the last checkpoint in output_dir, if there is one
    lora: Mapping[str, Any] | None = None  # flat_pipeline.models.lora.LoraSettings; None: every weight trains
    launch: Mapping[str, Any] | None = None  # flat_pipeline.launch.LaunchSettings; None: this process only
    trajectory: Mapping[str, Any] | None = None  # flat_pipeline.training.trajectory.TrajectoryConfig; None: none

    block: InitVar[str] = "unlearn"  # names the parameters in messages (the benchmark: benchmark.methods.<name>)

    def __post_init__(self, block: str) -> None:
        self.block = block
        check_choice(f"{block}.method", self.method, sorted(METHODS))
        check_choice(f"{block}.divergence", self.divergence, sorted(DIVERGENCES))
        check_choice(f"{block}.score", self.score, SCORES)
        check_choice("templates.pairing", self.pairing, PAIRINGS)
        check_choice(f"{block}.loss_form", self.loss_form, LOSS_FORMS)
        for name, shared in SHARED_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, self.spec.defaults.get(name, shared))
        if self.code_compat and self.score != "prob":
            raise ParameterError(
                f"parameter {block}.code_compat: the reference code's form scores probabilities; set score=prob"
            )
        for name in ("forget_weight", "retain_weight"):
            check_number(f"{block}.{name}", getattr(self, name), minimum=0)
        check_number(f"{block}.beta", self.beta, above=0)
        check_number(f"{block}.delta", self.delta)
        check_number(f"{block}.rmu_layer", self.rmu_layer, minimum=0, integer=True)
        check_number(f"{block}.steering_coeff", self.steering_coeff)
        check_optimizer_settings(self, block)
        self.lora_settings = LoraSettings.from_params(self.lora, block)
        self.launch_settings = LaunchSettings.from_params(self.launch, block)
        self.trajectory_settings = TrajectoryConfig.from_params(self.trajectory, block)
        if self.trajectory_settings.enabled and self.launch_settings.num_processes > 1:
            raise ParameterError(
                f"parameter {block}.trajectory.every: a launched training ({block}.launch.num_processes > 1) cannot "
                f"evaluate between steps; set every: null or num_processes: 1"
            )

    @property
    def spec(self) -> Method:
        return METHODS[self.method]

    @classmethod
    def from_params(cls, params: Mapping[str, Any], block: str = "unlearn") -> UnlearnConfig:
        """From an `unlearn` block (or a benchmark method's, `block="benchmark.methods.<name>"`); unknown keys name
        the nearest known one."""
        return config_from_params(cls, params, block)

    def remedy(self) -> str:
        """What to change when training diverges or collapses."""
        hint = f"Lower {self.block}.learning_rate (now {self.learning_rate:g})"
        if self.method == "flat" and self.score == "prob":
            hint += f", or set {self.block}.score=logprob (FLAT's probability scores underflow)"
        return hint + "."


class UnlearnCollator:
    """Pads each side of a batch: forget answers, the item's template for the current epoch, a retain example.

    Retain examples are drawn per forget item with a seeded generator, a new draw every epoch, as open-unlearning
    pairs them.
    """

    def __init__(self, pad_token_id: int, pairing: str, seed: int, retain: Dataset | None = None) -> None:
        self.pad_token_id, self.pairing, self.seed, self.retain = pad_token_id, pairing, seed, retain
        self.epoch = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sides = {"forget": ([e["forget_input_ids"] for e in examples], [e["forget_labels"] for e in examples])}
        if "template_input_ids" in examples[0]:
            chosen = [
                pick_template(range(len(e["template_input_ids"])), e["index"], self.epoch, self.seed, self.pairing)
                for e in examples
            ]
            sides["template"] = (
                [e["template_input_ids"][c] for e, c in zip(examples, chosen, strict=True)],
                [e["template_labels"][c] for e, c in zip(examples, chosen, strict=True)],
            )
        if self.retain is not None:
            drawn = [
                self.retain[random.Random(f"{self.seed}-{self.epoch}-{e['index']}").randrange(len(self.retain))]
                for e in examples
            ]
            sides["retain"] = ([r["input_ids"] for r in drawn], [r["labels"] for r in drawn])
        batch: dict[str, torch.Tensor] = {}
        for name, (ids, labels) in sides.items():
            for key, value in pad_batch(ids, self.pad_token_id, labels=labels).items():
                batch[f"{name}_{key}"] = value
        return batch


def tokenize_forget(
    rows: Dataset, tokenizer: Any, prompt: PromptFormat, max_length: int | None, with_templates: bool = True,
    *, parameter: str = "unlearn.max_length",
) -> Dataset:  # fmt: skip
    """Token ids of each forget item's forget answer and (for methods that use them) of its template candidates.
    `parameter` names `max_length` in the message about a prompt too long for it."""

    def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
        try:
            forget = encode_example(tokenizer, row["forget_answer"], row["prompt"], prompt, max_length)
            templates = [
                encode_example(tokenizer, answer, row["prompt"], prompt, max_length)
                for answer in (row["template_answers"] if with_templates else [])
            ]
        except PromptTooLong as error:
            raise error.naming(f"forget set, row {index}", row["prompt"], parameter) from None
        encoded: dict[str, Any] = {"index": index, "forget_input_ids": forget.input_ids, "forget_labels": forget.labels}
        if with_templates:
            encoded["template_input_ids"] = [t.input_ids for t in templates]
            encoded["template_labels"] = [t.labels for t in templates]
        return encoded

    return rows.map(encode, with_indices=True, remove_columns=rows.column_names, desc="tokenising forget set")


def tokenize_retain(
    rows: Dataset, tokenizer: Any, prompt: PromptFormat, max_length: int | None, parameter: str = "unlearn.max_length"
) -> Dataset:
    """Token ids of retain QA pairs (rows with `question` and `answer`) or raw texts (rows with `text`)."""

    def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
        question, answer = (row["question"], row["answer"]) if "question" in row else (None, row["text"])
        try:
            encoded = encode_example(tokenizer, answer, question, prompt, max_length)
        except PromptTooLong as error:
            raise error.naming(f"retain set, row {index}", question, parameter) from None
        return {"input_ids": encoded.input_ids, "labels": encoded.labels}

    return rows.map(encode, with_indices=True, remove_columns=rows.column_names, desc="tokenising retain set")


def frozen_reference(model: Any) -> Any:
    """A frozen copy of the model before unlearning: eval mode, no gradients, same device and dtype."""
    reference = copy.deepcopy(model)
    reference.eval()
    reference.requires_grad_(False)
    return reference


def _trainer_class() -> type:
    from transformers import TrainerCallback

    class EpochToCollator(TrainerCallback):
        def __init__(self, collator: UnlearnCollator, on_epoch_end: Callable[[int], None] | None) -> None:
            self.collator, self.on_epoch_end_hook = collator, on_epoch_end

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.epoch = round(state.epoch or 0)

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.on_epoch_end_hook is not None:
                self.on_epoch_end_hook(round(state.epoch))

    class UnlearnTrainer(guarded_trainer()):
        """HF Trainer whose loss is the configured method's; logs the method's own terms beside the loss."""

        loss_is_scaled_for_ga = False  # the loss is a per-batch mean; the Trainer divides it over accumulation

        def __init__(
            self, *args, unlearn_config: UnlearnConfig, reference: Any = None, on_epoch_end=None, **kwargs
        ) -> None:
            job = f"unlearn ({unlearn_config.method})"
            super().__init__(
                *args, job=job, remedy=unlearn_config.remedy(), block=unlearn_config.block,
                divergence_factor=unlearn_config.divergence_factor, loss_limit=unlearn_config.loss_limit, **kwargs,
            )  # fmt: skip
            self.unlearn_config, self.reference = unlearn_config, reference
            self.add_callback(EpochToCollator(self.data_collator, on_epoch_end))
            self._log_sums: dict[str, Any] = {}
            self._log_count = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.reference is not None:
                parameter = next(model.parameters())
                self.reference.to(device=parameter.device, dtype=parameter.dtype)  # no-op once moved
            loss, logs = self.unlearn_config.spec.step(model, inputs, self.reference, self.unlearn_config)
            # the method's own terms say which side went wrong
            self.stop_unless_finite_loss(
                loss, lambda: f" ({ {key: round(value.item(), 4) for key, value in logs.items()} })"
            )
            for key, value in logs.items():
                self._log_sums[key] = self._log_sums.get(key, 0.0) + value  # tensors until logged
            self._log_count += 1
            return (loss, logs) if return_outputs else loss

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if self._log_count and "loss" in logs:
                for key, total in self._log_sums.items():
                    logs[key] = float(total) / self._log_count
                self._log_sums, self._log_count = {}, 0
            super().log(logs, *args, **kwargs)

    return UnlearnTrainer


def _arguments(config: UnlearnConfig, output_dir: str) -> Any:
    return training_arguments(config, output_dir, **checkpointing(config.output_dir))


def unlearn(
    bundle: ModelBundle,
    forget_templates: Dataset,
    config: UnlearnConfig,
    prompt: PromptFormat | None = None,
    *,
    retain_rows: Dataset | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    save_to: str | None = None,
    track_as: str | None = None,
    trajectory: Trajectory | None = None,
) -> tuple[ModelBundle, History]:
    """Unlearn the forget answers of `forget_templates` (rows: prompt, forget_answer, template_answers) in place.

    `retain_rows` (question, answer) are read only by methods that need retain data; a frozen copy of the model is
    made only for methods that need a reference (with `lora.enabled`, the model with its adapters off instead).
    `on_epoch_end(epoch)` is called after every epoch (e.g. to measure selectivity as it develops). `save_to`: also
    write the trained model there through the Trainer (gathering FSDP / DeepSpeed shards). `track_as` (e.g.
    `unlearn`): the curves also stream into the active MLflow run as `train/<track_as>/...` while training runs.
    `trajectory`: evaluate the model as it unlearns (at every epoch end or every N steps, `TrajectoryConfig`).

    Returns the model and its per-step history: `unlearn_loss`, learning rate, gradient norm and the method's own
    terms (FLAT: `template_score`, `forget_score`), and with a trajectory its points (`trajectory/<metric>`). Raises
    FloatingPointError on a non-finite loss or gradient norm, TrainingError on a collapsed model, and
    CheckpointMismatch when `config.output_dir` holds another training's checkpoints.
    """
    launched = config.launch_settings.num_processes
    processes = launched if launched > 1 else process_count()
    config = with_effective_batch(config, processes, "unlearn")
    if not in_launched_process():
        log_training_params(track_as, batch_record(config, processes))
    spec, lora, prompt = config.spec, config.lora_settings, prompt or PromptFormat()
    if spec.needs_retain and (retain_rows is None or len(retain_rows) == 0):
        raise ValueError(f"unlearn method '{config.method}' needs retain data, and the retain set is empty")
    if config.launch_settings.num_processes > 1:  # each launched process comes back here with launch unset
        if on_epoch_end is not None or trajectory is not None or lora.save == "adapter" and lora.enabled:
            raise ValueError(
                "unlearn.launch.num_processes > 1 supports neither on_epoch_end, a trajectory nor lora.save=adapter"
            )
        rows = {"forget": forget_templates, "retain": retain_rows if spec.needs_retain else None}
        bundle, history = run_launched(
            "unlearn", bundle, rows, config, config.launch_settings, prompt=prompt.to_params(), track_as=track_as
        )
    else:
        bundle, history = _unlearn_here(
            bundle, forget_templates, config, prompt,
            retain_rows=retain_rows, on_epoch_end=on_epoch_end, save_to=save_to, track_as=track_as,
            trajectory=trajectory,
        )  # fmt: skip
    if not in_launched_process():  # the launching process checks the whole model, not each shard of it
        sample = tokenize_forget(
            first_rows(forget_templates), bundle.tokenizer, prompt, config.max_length, with_templates=False
        )
        check_trained_model(
            bundle, sample["forget_input_ids"], history, job=f"unlearn ({config.method})", remedy=config.remedy()
        )
    return bundle, history


def _unlearn_here(
    bundle: ModelBundle,
    forget_templates: Dataset,
    config: UnlearnConfig,
    prompt: PromptFormat,
    *,
    retain_rows: Dataset | None,
    on_epoch_end: Callable[[int], None] | None,
    save_to: str | None,
    track_as: str | None = None,
    trajectory: Trajectory | None = None,
) -> tuple[ModelBundle, History]:
    spec, lora = config.spec, config.lora_settings
    if spec.check_model is not None:
        spec.check_model(bundle.model, config)
    if lora.enabled and lora.save == "adapter" and bundle.source is None:
        raise ValueError(
            f"parameter {config.block}.lora.save: 'adapter' needs the original model loaded from a folder (the "
            f"adapter is loaded onto it later); use 'merged'"
        )
    tokenizer = bundle.tokenizer
    check_max_length(bundle.model, config.max_length, f"{config.block}.max_length")
    parameter = f"{config.block}.max_length"
    train_set = tokenize_forget(
        forget_templates, tokenizer, prompt, config.max_length, spec.needs_templates, parameter=parameter
    )
    retain = (
        tokenize_retain(retain_rows, tokenizer, prompt, config.max_length, parameter) if spec.needs_retain else None
    )
    settings = {**asdict(config), "lora": asdict(lora) if lora.enabled else None}
    # only a training that keeps checkpoints compares fingerprints (the start model's files are read for it)
    current = {}
    if config.output_dir:
        current = fingerprint(settings, {"forget": train_set, "retain": retain}, start_model_identity(bundle))
    # one training at a time per output_dir, held before its fingerprint is written (training/checkpoints.py)
    with owned_output_dir(config.output_dir, config.block), tempfile.TemporaryDirectory() as scratch:
        checkpoint = checkpoint_to_resume(config.output_dir, config.resume, current, config.block)
        if lora.enabled:
            bundle.model = add_lora(bundle.model, lora)
        reference = None
        if spec.needs_reference:  # with LoRA the model itself, adapters off; else a frozen copy
            reference = AdapterDisabled(bundle.model) if lora.enabled else frozen_reference(bundle.model)
        collator = UnlearnCollator(tokenizer.pad_token_id, config.pairing, config.seed, retain)
        logger.info(
            "unlearning %d forget items with %s (retain data: %s, reference model: %s)",
            len(train_set), config.method, spec.needs_retain, spec.needs_reference,
        )  # fmt: skip
        trainer = _trainer_class()(
            model=bundle.model,
            args=_arguments(config, config.output_dir or scratch),
            train_dataset=train_set,
            data_collator=collator,
            unlearn_config=config,
            reference=reference,
            on_epoch_end=on_epoch_end,
            collapse_sample=CollapseSample(first_rows(train_set)["forget_input_ids"], tokenizer.pad_token_id),
            callbacks=[curves_callback(track_as), *([trajectory.callback(tokenizer)] if trajectory else [])],
        )
        if checkpoint:
            logger.info("resuming unlearning from %s", checkpoint)
        trainer.train(resume_from_checkpoint=checkpoint)
        if save_to is not None and not lora.enabled:
            save_trained(trainer, tokenizer, save_to)
    if lora.enabled:
        bundle.model = finish_lora(bundle.model, lora)
        if save_to is not None and is_main_process():  # merged after training (DDP; not FSDP / DeepSpeed)
            bundle.model.save_pretrained(save_to)
            tokenizer.save_pretrained(save_to)
            make_portable(save_to)
    # The method's own terms are logged under their names; the Trainer's end-of-run summary (train_*) is not.
    logged = {"loss": "unlearn_loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm"}
    for entry in trainer.state.log_history:
        logged.update({key: key for key in entry if key not in logged and key not in ("epoch", "step")})
    logged = {key: name for key, name in logged.items() if not key.startswith("train_") and key != "total_flos"}
    history = history_from_log(trainer.state.log_history, logged)
    return bundle, {**history, **(trajectory.history() if trajectory else {})}
