"""FLAT unlearning: forget data and template answers only; no retain data, no reference model.

Every step runs two forward passes through the model being unlearned: the forget prompts with their template answers
and the same prompts with their forget answers. Only answer positions reach the LM head (`answer_logits`), and only
the label token's log-probability is kept (a gather and a logsumexp, never a stored softmax), so the cost does not
grow with the full logits of every position as in the reference code (flat.md §1.3).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset

from flat_pipeline.batching import pad_batch
from flat_pipeline.losses import DIVERGENCES, SCORES, code_compat_flat_loss, flat_loss, sequence_scores
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import encode_example
from flat_pipeline.scoring import token_logprobs
from flat_pipeline.templates import PAIRINGS, pick_template
from flat_pipeline.training.common import History, config_from_params, history_from_log, training_arguments

logger = logging.getLogger(__name__)


@dataclass
class FLATConfig:
    """FLAT hyperparameters; optimiser names follow `transformers.TrainingArguments`."""

    divergence: str = "kl"
    score: str = "logprob"  # prob: the paper's mean token probability; logprob: mean token log-probability
    code_compat: bool = False  # the reference code's batch-level probability score (flat.md §1.3)
    pairing: str = "resample"  # fixed | resample: which template candidate each epoch trains on
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "constant"
    num_train_epochs: float = 5
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    max_length: int = 512
    seed: int = 0
    logging_steps: int = 1
    bf16: bool = False
    fp16: bool = False
    output_dir: str | None = None  # checkpoints (one per epoch, the last kept); None: a temporary folder

    def __post_init__(self) -> None:
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"parameter unlearn.divergence: expected one of {sorted(DIVERGENCES)}, got '{self.divergence}'"
            )
        if self.score not in SCORES:
            raise ValueError(f"parameter unlearn.score: expected one of {SCORES}, got '{self.score}'")
        if self.pairing not in PAIRINGS:
            raise ValueError(f"parameter templates.pairing: expected one of {PAIRINGS}, got '{self.pairing}'")
        if self.code_compat and self.score != "prob":
            raise ValueError(
                "parameter unlearn.code_compat: the reference code's form scores probabilities; set score=prob"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> FLATConfig:
        return config_from_params(cls, params, "unlearn")


def flat_step_loss(model: Any, batch: Mapping[str, torch.Tensor], config: FLATConfig) -> tuple[torch.Tensor, dict]:
    """The FLAT loss of one batch holding `template_*` and `forget_*` tensors, and the mean scores of each side."""
    sides = {}
    for side in ("template", "forget"):
        inputs = {key: batch[f"{side}_{key}"] for key in ("input_ids", "attention_mask", "labels")}
        sides[side] = token_logprobs(model, inputs)
    (t_lp, t_mask, t_len), (f_lp, f_mask, f_len) = sides["template"], sides["forget"]
    t_scores = sequence_scores(t_lp, t_mask, config.score)
    f_scores = sequence_scores(f_lp, f_mask, config.score)
    if config.code_compat:
        loss = code_compat_flat_loss(
            t_lp.exp() * t_mask,
            t_mask,
            f_lp.exp() * f_mask,
            f_mask,
            config.divergence,
            template_positions=t_lp.shape[0] * (t_len - 1),
            forget_positions=f_lp.shape[0] * (f_len - 1),
        )
    else:
        loss = flat_loss(t_scores, f_scores, config.divergence)
    # Detached tensors, not floats: `.item()` here would synchronise with the GPU on every step.
    return loss, {"template_score": t_scores.detach().mean(), "forget_score": f_scores.detach().mean()}


class FLATCollator:
    """Pads the template and the forget side of a batch; picks each item's template for the current epoch."""

    def __init__(self, pad_token_id: int, pairing: str, seed: int) -> None:
        self.pad_token_id, self.pairing, self.seed = pad_token_id, pairing, seed
        self.epoch = 0

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {}
        chosen = [
            pick_template(range(len(e["template_input_ids"])), e["index"], self.epoch, self.seed, self.pairing)
            for e in examples
        ]
        sides = {
            "forget": ([e["forget_input_ids"] for e in examples], [e["forget_labels"] for e in examples]),
            "template": (
                [e["template_input_ids"][c] for e, c in zip(examples, chosen, strict=True)],
                [e["template_labels"][c] for e, c in zip(examples, chosen, strict=True)],
            ),
        }
        for side, (ids, labels) in sides.items():
            for key, value in pad_batch(ids, self.pad_token_id, labels=labels).items():
                batch[f"{side}_{key}"] = value
        return batch


def tokenize_templates(rows: Dataset, tokenizer: Any, prompt_format: str, max_length: int | None) -> Dataset:
    """Token ids of each forget item's forget answer and of all its template candidates."""

    def encode(row: dict[str, Any], index: int) -> dict[str, Any]:
        forget = encode_example(tokenizer, row["forget_answer"], row["prompt"], prompt_format, max_length)
        templates = [
            encode_example(tokenizer, answer, row["prompt"], prompt_format, max_length)
            for answer in row["template_answers"]
        ]
        return {
            "index": index,
            "forget_input_ids": forget.input_ids,
            "forget_labels": forget.labels,
            "template_input_ids": [t.input_ids for t in templates],
            "template_labels": [t.labels for t in templates],
        }

    return rows.map(encode, with_indices=True, remove_columns=rows.column_names, desc="tokenising")


def _trainer_class() -> type:
    from transformers import Trainer, TrainerCallback

    class EpochToCollator(TrainerCallback):
        def __init__(self, collator: FLATCollator, on_epoch_end: Callable[[int], None] | None) -> None:
            self.collator, self.on_epoch_end_hook = collator, on_epoch_end

        def on_epoch_begin(self, args, state, control, **kwargs):
            self.collator.epoch = round(state.epoch or 0)

        def on_epoch_end(self, args, state, control, **kwargs):
            if self.on_epoch_end_hook is not None:
                self.on_epoch_end_hook(round(state.epoch))

    class FLATTrainer(Trainer):
        """HF Trainer with the FLAT loss; logs the mean template and forget scores beside the loss."""

        loss_is_scaled_for_ga = False  # the loss is a per-batch mean; the Trainer divides it over accumulation

        def __init__(self, *args, flat_config: FLATConfig, on_epoch_end=None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.flat_config = flat_config
            self.add_callback(EpochToCollator(self.data_collator, on_epoch_end))
            self._score_sums: dict[str, Any] = {}
            self._score_count = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, scores = flat_step_loss(model, inputs, self.flat_config)
            if not torch.isfinite(loss):
                readable = {key: round(value.item(), 4) for key, value in scores.items()}
                raise FloatingPointError(
                    f"FLAT loss is {loss.item()} at step {self.state.global_step} (scores {readable}); stopping. "
                    f"Checkpoints of earlier epochs stay in {self.args.output_dir}. Lower unlearn.learning_rate or "
                    f"use unlearn.score=logprob."
                )
            for key, value in scores.items():
                self._score_sums[key] = self._score_sums.get(key, 0.0) + value  # tensors until logged
            self._score_count += 1
            return (loss, scores) if return_outputs else loss

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if self._score_count and "loss" in logs:
                for key, total in self._score_sums.items():
                    logs[key] = float(total) / self._score_count
                self._score_sums, self._score_count = {}, 0
            super().log(logs, *args, **kwargs)

    return FLATTrainer


def _arguments(config: FLATConfig, output_dir: str, keep_checkpoints: bool) -> Any:
    return training_arguments(
        config,
        output_dir,
        save_strategy="epoch" if keep_checkpoints else "no",
        save_total_limit=1 if keep_checkpoints else None,
        save_only_model=True,
    )


_LOGGED = {"loss": "unlearn_loss", "template_score": "template_score", "forget_score": "forget_score",
           "learning_rate": "learning_rate", "grad_norm": "grad_norm"}  # fmt: skip


def unlearn_flat(
    bundle: ModelBundle,
    forget_templates: Dataset,
    config: FLATConfig,
    prompt_format: str = "plain",
    on_epoch_end: Callable[[int], None] | None = None,
) -> tuple[ModelBundle, History]:
    """Unlearn the forget answers of `forget_templates` (rows: prompt, forget_answer, template_answers) in place.

    `on_epoch_end(epoch)` is called after every epoch (e.g. to measure selectivity as it develops).
    """
    train_set = tokenize_templates(forget_templates, bundle.tokenizer, prompt_format, config.max_length)
    collator = FLATCollator(bundle.tokenizer.pad_token_id, config.pairing, config.seed)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = _trainer_class()(
            model=bundle.model,
            args=_arguments(config, config.output_dir or scratch, keep_checkpoints=config.output_dir is not None),
            train_dataset=train_set,
            data_collator=collator,
            flat_config=config,
            on_epoch_end=on_epoch_end,
        )
        trainer.train()
    return bundle, history_from_log(trainer.state.log_history, _LOGGED)
