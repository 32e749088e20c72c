"""What a saved model folder holds, read without loading it (flat_pipeline.models.describe)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from flat_pipeline.models.describe import describe_model_folder, safetensors_header


def test_a_sharded_model_is_counted_across_its_shards(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "torch_dtype": "bfloat16"}))
    save_file({"a": np.zeros((3, 4), np.float32)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": np.zeros(5, np.float16)}, tmp_path / "model-00002-of-00002.safetensors")
    info = describe_model_folder(tmp_path)
    assert info["kind"] == "model" and info["dtype"] == "bfloat16"  # transformers 4.x's key, when 5.x's is absent
    assert info["parameters"] == 17 and info["weight_dtypes"] == "F16, F32"


def test_a_lora_adapter_saved_alone_shows_its_base_model(tmp_path):
    adapter = {"base_model_name_or_path": "data/06_models/original_model", "peft_type": "LORA", "r": 8,
               "target_modules": ["v_proj", "q_proj"]}  # fmt: skip
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter))
    save_file({"lora_A": np.zeros((8, 16), np.float32)}, tmp_path / "adapter_model.safetensors")
    info = describe_model_folder(tmp_path)
    assert info["kind"] == "LoRA adapter" and info["base_model_name_or_path"] == "data/06_models/original_model"
    assert info["target_modules"] == "q_proj, v_proj" and info["parameters"] == 128


def test_a_folder_that_is_no_model_or_no_safetensors_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: not a save_pretrained folder"):
        describe_model_folder(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match=r"model.safetensors: not a safetensors file \(header length"):
        safetensors_header(tmp_path / "model.safetensors")
