"""LoRA for finetune and unlearn: only adapters train, the result is saved merged or as an adapter and reloads to
the same model, and reference-model methods use the model with its adapters off instead of a copy."""

from __future__ import annotations

import warnings

import pytest
import torch
from datasets import Dataset

import flat_pipeline.training.unlearn as unlearn_module
from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.models.lora import LoraSettings, is_lora
from flat_pipeline.training.finetune import FinetuneConfig, finetune, finetune_from_params
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

LORA = {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0, "target_modules": "all-linear"}


@pytest.fixture
def forget_templates(small_world):
    rows = small_world["forget10_perturbed"][:16]
    return Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "forget_answer": [r["answer"] for r in rows],
            "template_answers": [["I don't know."]] * len(rows),
        }
    )


def test_finetune_with_lora_trains_adapters_only_and_saves_the_merged_model(tiny_model_dir, small_world):
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])
    base = load_causal_lm(str(tiny_model_dir)).model
    model_params = {"source": "pretrained", "name_or_path": str(tiny_model_dir)}
    training = {"learning_rate": 1e-2, "num_train_epochs": 2, "per_device_train_batch_size": 8, "logging_steps": 1}
    bundle, history = finetune_from_params(
        rows, None, model_params, {"training": training, "lora": {**LORA, "save": "merged"}}
    )
    assert not is_lora(bundle.model)  # merged: a plain LlamaForCausalLM
    assert history["train_loss"][-1]["value"] < history["train_loss"][0]["value"]
    merged, original = dict(bundle.model.named_parameters()), dict(base.named_parameters())
    assert not torch.equal(
        merged["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"]
    )
    # embeddings (tied with the head) are not a LoRA target: untouched
    assert torch.equal(merged["model.embed_tokens.weight"], original["model.embed_tokens.weight"])


def test_adapter_save_needs_a_base_model_on_disk(small_world):
    rows = Dataset.from_list([{"question": "Q?", "answer": "A."}])
    with pytest.raises(ValueError, match="'adapter' needs model.source=pretrained"):
        finetune_from_params(
            rows, None, {"source": "tiny_llama"}, {"training": {}, "lora": {**LORA, "save": "adapter"}}
        )
    with pytest.raises(ValueError, match="lora.save: expected one of"):
        UnlearnConfig(lora={**LORA, "save": "both"})


def test_unlearn_with_lora_uses_adapters_off_as_reference_and_saves_an_adapter(
    tiny_model_dir, forget_templates, small_world, tmp_path, monkeypatch
):
    monkeypatch.setattr(unlearn_module, "frozen_reference", lambda model: pytest.fail("no copy with LoRA"))
    original = load_causal_lm(str(tiny_model_dir))
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    config = UnlearnConfig(
        method="npo", learning_rate=1e-2, num_train_epochs=2, per_device_train_batch_size=8,
        lora={**LORA, "save": "adapter"},
    )  # fmt: skip
    bundle, history = unlearn(original, forget_templates, config, retain_rows=retain)
    # step 1: the adapters are zero, so the model equals its reference: log-ratio 0
    assert history["forget_logratio"][0]["value"] == pytest.approx(0.0, abs=1e-5)
    assert history["forget_logratio"][-1]["value"] < -0.1
    assert is_lora(bundle.model)

    dataset = HFModelDataset(filepath=str(tmp_path / "unlearned"))
    dataset.save(bundle)
    assert (tmp_path / "unlearned" / "adapter_config.json").is_file()
    assert not (tmp_path / "unlearned" / "config.json").exists()  # the adapter alone, not a second copy of weights
    reloaded = dataset.load()
    ids = torch.tensor([bundle.tokenizer("Question: Who?\nAnswer:")["input_ids"]])
    with torch.no_grad():
        bundle.model.eval()
        expected = bundle.model(input_ids=ids).logits
        assert torch.allclose(reloaded.model(input_ids=ids).logits, expected, atol=1e-5)


def test_lora_with_gradient_checkpointing_trains_and_reloads_without_the_deprecated_attribute_warning(
    tiny_model_dir, forget_templates, small_world, tmp_path
):
    # peft reads `is_gradient_checkpointing` (a FutureWarning in transformers 5) whenever it wraps a model: here in
    # finetune's and unlearn's adapters and when an adapter folder is loaded
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bundle = load_causal_lm(str(tiny_model_dir), gradient_checkpointing=True)
        config = FinetuneConfig(learning_rate=1e-2, num_train_epochs=1, per_device_train_batch_size=8, logging_steps=1)
        _, finetuned = finetune(bundle, rows, config, lora=LoraSettings(**LORA))
        bundle = load_causal_lm(str(tiny_model_dir), gradient_checkpointing=True)
        config = UnlearnConfig(
            method="ga", num_train_epochs=1, per_device_train_batch_size=8, lora={**LORA, "save": "adapter"}
        )
        bundle, unlearned = unlearn(bundle, forget_templates, config)
        bundle.model.save_pretrained(tmp_path / "adapter")
        bundle.tokenizer.save_pretrained(tmp_path / "adapter")
        reloaded = load_causal_lm(str(tmp_path / "adapter"), gradient_checkpointing=True)
    assert [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)] == []
    # the checkpointed layers still get gradients: peft's hook that makes the frozen embeddings' output need them
    assert all(entry["value"] > 0 for entry in finetuned["grad_norm"] + unlearned["grad_norm"])
    assert is_lora(reloaded.model) and reloaded.model.base_model.model.is_activation_checkpointing
