"""LoRA through peft, for finetuning and unlearning: train low-rank adapters instead of every weight, then save the
merged model or the adapter alone.

With LoRA, methods that need a reference model get the same model with its adapters switched off
(`AdapterDisabled`) instead of a frozen copy: at the start of unlearning the adapters are zero, so this is exactly
the starting model, and an 8B model is not held twice.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import InitVar, dataclass, field
from typing import Any

import torch

from flat_pipeline.config import ParameterError, check_choice, check_number, config_from_params

LORA_SAVES = ("merged", "adapter")


@dataclass
class LoraSettings:
    """A `lora:` parameter block (of `finetune` or `unlearn`)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = field(default="all-linear")  # peft's shorthand: every linear layer but the head
    save: str = "merged"  # merged: the adapters folded into the weights; adapter: the adapter folder alone
    block: InitVar[str] = "lora"  # names the parameters in messages

    def __post_init__(self, block: str) -> None:
        check_choice(f"{block}.save", self.save, LORA_SAVES)
        check_number(f"{block}.r", self.r, minimum=1, integer=True)
        check_number(f"{block}.alpha", self.alpha, above=0)
        check_number(f"{block}.dropout", self.dropout, minimum=0, below=1)
        targets = self.target_modules
        names = [targets] if isinstance(targets, str) else targets
        if not (isinstance(names, list | tuple) and all(isinstance(name, str) for name in names)):
            raise ParameterError(
                f"parameter {block}.target_modules: expected a module name pattern or a list of names, got {targets!r}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, block: str) -> LoraSettings:
        """From the `lora` block inside `block` (e.g. `finetune`); unknown keys name the nearest known one."""
        return config_from_params(cls, params or {}, f"{block}.lora")


def is_lora(model: Any) -> bool:
    return hasattr(model, "peft_config")


@contextmanager
def _peft_reads_gradient_checkpointing() -> Iterator[None]:
    """Hide the one FutureWarning that wrapping a model in peft 0.21 costs under transformers 5.

    `PeftModel.__init__` reads `model.is_gradient_checkpointing` (transformers 5's deprecated alias of
    `is_activation_checkpointing`) to decide whether the frozen embeddings' output must require gradients; our own code
    uses the new name, and there is no way to wrap a model without that read. Only that message is hidden, only
    around the call: any other warning, and the alias read anywhere else, still show.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def add_lora(model: Any, settings: LoraSettings) -> Any:
    """The model wrapped with fresh LoRA adapters; only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with _peft_reads_gradient_checkpointing():
        return get_peft_model(model, config)


def finish_lora(model: Any, settings: LoraSettings) -> Any:
    """After training: the plain model with the adapters merged in, or the adapter model as it is (`save: adapter`:
    `save_pretrained` then writes the adapter alone, loaded later onto the base model it names)."""
    return model.merge_and_unload() if settings.save == "merged" else model


def load_adapter(path: str, base: Any) -> Any:
    """An adapter folder written by `save_pretrained`, on its base model."""
    from peft import PeftModel

    with _peft_reads_gradient_checkpointing():
        return PeftModel.from_pretrained(base, path)


class AdapterDisabled:
    """A LoRA model seen with its adapters switched off, without gradients: the reference model for free."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), self.model.disable_adapter():
            return self.model(*args, **kwargs)

    __call__ = forward

    def to(self, *args: Any, **kwargs: Any) -> AdapterDisabled:
        return self  # it is the trained model itself, already in place

    def parameters(self) -> Any:
        return self.model.parameters()
