"""Padding token-id lists into batches. Attention masks come from lengths, never from `ids != pad`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flat_pipeline.prompts import IGNORE_INDEX


def pad_batch(
    input_ids: Sequence[Sequence[int]],
    pad_token_id: int,
    labels: Sequence[Sequence[int]] | None = None,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """`input_ids`, `attention_mask` (and `labels`, padded with -100) as tensors.

    Right padding for training and scoring; left padding for generation, so every prompt ends at the last column.
    """
    width = max(len(ids) for ids in input_ids)
    batch = {
        "input_ids": torch.full((len(input_ids), width), pad_token_id, dtype=torch.long),
        "attention_mask": torch.zeros((len(input_ids), width), dtype=torch.long),
    }
    if labels is not None:
        batch["labels"] = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    for row, ids in enumerate(input_ids):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        batch["input_ids"][row, span] = torch.tensor(ids, dtype=torch.long)
        batch["attention_mask"][row, span] = 1
        if labels is not None:
            batch["labels"][row, span] = torch.tensor(labels[row], dtype=torch.long)
    return batch


class PadCollator:
    """Data collator for examples holding `input_ids` and `labels` lists (right padding)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return pad_batch([e["input_ids"] for e in examples], self.pad_token_id, labels=[e["labels"] for e in examples])
