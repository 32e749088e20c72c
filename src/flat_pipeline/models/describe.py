"""What a saved model folder holds, read from its JSON files and the safetensors headers, without loading a weight.

For previews (kedro-viz's panel on `flat_pipeline.io.HFModelDataset`): opening a folder must take milliseconds, not
the seconds to minutes that `from_pretrained` takes for a real model.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

# The config keys shown, in this order, where the config has them (the architecture's size, in transformers' names).
CONFIG_KEYS = (
    "vocab_size",
    "num_hidden_layers",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "tie_word_embeddings",
)
ADAPTER_KEYS = ("base_model_name_or_path", "peft_type", "r", "lora_alpha", "target_modules")
# A safetensors header is JSON of a few KB per hundred tensors; a larger length means the file is not safetensors.
MAX_HEADER_BYTES = 100_000_000


def safetensors_header(path: Path) -> dict[str, Any]:
    """The header of a safetensors file: tensor name -> {dtype, shape, data_offsets} (and `__metadata__`).

    Raises:
        ValueError: the file does not start with a safetensors header; the message names the file.
    """
    with open(path, "rb") as file:
        prefix = file.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        if not 0 < length <= MAX_HEADER_BYTES:
            raise ValueError(f"{path}: not a safetensors file (header length {length})")
        try:
            return json.loads(file.read(length))
        except ValueError as error:
            raise ValueError(f"{path}: not a safetensors file (header is not JSON: {error})") from None


def weight_summary(folder: Path) -> dict[str, Any]:
    """Parameter count, stored dtypes (`F32, BF16`) and bytes of the `*.safetensors` files in `folder` (shards
    included)."""
    parameters, dtypes, size = 0, set(), 0
    for file in sorted(folder.glob("*.safetensors")):
        for name, tensor in safetensors_header(file).items():
            if name != "__metadata__":
                parameters += math.prod(tensor["shape"])
                dtypes.add(tensor["dtype"])
        size += file.stat().st_size
    return {"parameters": parameters, "weight_dtypes": ", ".join(sorted(dtypes)), "weight_bytes": size}


def describe_model_folder(folder: str | Path) -> dict[str, Any]:
    """A `save_pretrained` folder (a model, or a LoRA adapter saved alone) in a few lines: what it is, its size.

    Returns:
        An ordered mapping: `kind`, then the architecture (`model_type`, `architectures`, `dtype` and CONFIG_KEYS),
        or the adapter's settings (ADAPTER_KEYS), then `parameters`, `weight_dtypes` and `weight_bytes` from the
        safetensors headers (0 parameters where the weights are not safetensors files).

    Raises:
        FileNotFoundError: the folder has neither config.json nor adapter_config.json.
    """
    folder = Path(folder)
    config_file, adapter_file = folder / "config.json", folder / "adapter_config.json"
    if config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        info: dict[str, Any] = {
            "kind": "model",
            "model_type": config.get("model_type"),
            "architectures": ", ".join(config.get("architectures") or []),
            # transformers 5 writes `dtype`, 4.x `torch_dtype` (models/portable.py writes both)
            "dtype": config.get("dtype") or config.get("torch_dtype"),
            **{key: config[key] for key in CONFIG_KEYS if key in config},
        }
    elif adapter_file.is_file():
        adapter = json.loads(adapter_file.read_text(encoding="utf-8"))
        info = {"kind": "LoRA adapter", **{key: adapter[key] for key in ADAPTER_KEYS if key in adapter}}
        if isinstance(info.get("target_modules"), list):
            info["target_modules"] = ", ".join(sorted(info["target_modules"]))
    else:
        raise FileNotFoundError(f"{folder}: not a save_pretrained folder (no config.json or adapter_config.json)")
    return {**info, **weight_summary(folder)}
