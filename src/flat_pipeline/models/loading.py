"""Load any Hugging Face causal LM and its tokenizer, by hub id or local path."""

from __future__ import annotations

from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


def load_causal_lm(name_or_path: str, dtype: str = "float32") -> tuple[Any, Any]:
    """(model, tokenizer) from a hub id or a local folder; offline, only local folders and cached ids work."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"model dtype: expected one of {DTYPES}, got '{dtype}'")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=getattr(torch, dtype))
    except OSError as err:
        raise OSError(
            f"could not load a causal LM from '{name_or_path}': give a local folder written by save_pretrained, "
            f"or a hub id with the hub reachable ({err})"
        ) from err
    return model, tokenizer
