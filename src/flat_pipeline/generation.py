"""Batched generation with left padding: greedy continuations, and several samples per prompt."""

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


def _shared_prefix_length(rows: Sequence[torch.Tensor]) -> int:
    """How many leading tokens every row has in common (a few-shot prompt's instruction and shots)."""
    shortest = min(len(row) for row in rows)
    same = torch.stack([row[:shortest] for row in rows]).eq(rows[0][:shortest]).all(0)
    return shortest if bool(same.all()) else int(same.long().argmin())


@torch.no_grad()
def sample_per_prompt(model: Any, inputs: dict[str, torch.Tensor], k: int, **generate_kwargs: Any) -> torch.Tensor:
    """`k` sampled continuations of each left-padded prompt in `inputs`, rows in prompt order, as `generate` with
    `num_return_sequences=k` gives them, reading each prompt once instead of k times.

    Few-shot prompts are long and mostly the same: the tokens every prompt starts with are read once for the batch,
    each prompt's own rest once for its k samples. The rows are laid out as [shared tokens][padding][own tokens],
    the padding masked and the positions counted without it, as `generate` counts them. The output has that layout,
    as wide as `inputs`: the new tokens start at the same column.
    """
    device = next(model.parameters()).device
    ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
    if k == 1 and len(ids) == 1:  # nothing to share
        return model.generate(input_ids=ids, attention_mask=mask, do_sample=True, **generate_kwargs)
    from transformers import DynamicCache

    rows = [row[len(row) - int(length) :] for row, length in zip(ids, mask.sum(1), strict=True)]
    # every row keeps at least its last token uncached: `generate` reads it to draw the first new token
    shared = min(_shared_prefix_length(rows), min(len(row) for row in rows) - 1)
    width = max(len(row) for row in rows) - shared
    pad = ids.new_full((), generate_kwargs.get("pad_token_id") or 0)  # masked: any token id will do
    ids = torch.stack([torch.cat([row[:shared], pad.expand(shared + width - len(row)), row[shared:]]) for row in rows])
    mask = torch.stack(
        [torch.cat([mask.new_ones(shared), mask.new_zeros(shared + width - len(row)), mask.new_ones(len(row) - shared)])
         for row in rows]
    )  # fmt: skip
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    if shared:
        model(input_ids=ids[:1, :shared], position_ids=positions[:1, :shared], past_key_values=cache, use_cache=True)
        cache.batch_repeat_interleave(len(rows))
    if width > 1:  # each prompt's own tokens but the last
        model(
            input_ids=ids[:, shared:-1],
            attention_mask=mask[:, :-1],
            position_ids=positions[:, shared:-1],
            past_key_values=cache,
            use_cache=True,
        )
    cache.batch_repeat_interleave(k)
    return model.generate(
        input_ids=ids.repeat_interleave(k, 0),
        attention_mask=mask.repeat_interleave(k, 0),
        past_key_values=cache,
        do_sample=True,
        **generate_kwargs,
    )
