"""A Llama built from a config (the embedded default model)."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


def build_llama(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int = 96,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 3,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 512,
    attn_implementation: str = "sdpa",
    seed: int = 0,
) -> LlamaForCausalLM:
    """A randomly initialised LlamaForCausalLM sized for `tokenizer`, seeded for identical weights on every run."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_attention_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)
