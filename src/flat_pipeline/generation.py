"""Batched greedy generation with left padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from flat_pipeline.batching import pad_batch


@torch.no_grad()
def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 200,
    batch_size: int = 64,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of tokenised prompts, cut at eos, special tokens dropped, stripped."""
    model.eval()
    device = next(model.parameters()).device
    outputs: list[str] = []
    starts = range(0, len(prompts), batch_size)
    bar = None if progress else True  # None: on a terminal only (in a log file each redraw would pile up)
    for start in tqdm(starts, desc="generating", disable=bar, leave=False):
        chunk = prompts[start : start + batch_size]
        batch = pad_batch(chunk, tokenizer.pad_token_id, padding_side="left")
        batch = {k: v.to(device) for k, v in batch.items()}
        generated = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        for ids in new_tokens.tolist():
            kept = ids[: ids.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in ids else ids
            outputs.append(tokenizer.decode(kept, skip_special_tokens=True).strip())
    return outputs
