"""Teacher-forced scoring of answers: per-token log-probabilities and argmax hits on answer tokens only."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from flat_pipeline.batching import pad_batch
from flat_pipeline.prompts import IGNORE_INDEX, Encoded


@dataclass(frozen=True)
class AnswerScore:
    """Teacher-forced view of one answer: log p of every answer token (eos included) and whether it was the argmax."""

    token_logprobs: list[float]
    argmax_hits: list[bool]

    @property
    def mean_nll(self) -> float:
        return -sum(self.token_logprobs) / len(self.token_logprobs)

    @property
    def exact(self) -> bool:
        """Every answer token is the argmax: the answer is exactly what greedy decoding produces."""
        return all(self.argmax_hits)


def _accepts_logits_to_keep(model: Any) -> bool:
    forward = getattr(model, "module", model).forward  # DDP / accelerate wrappers keep the model in .module
    return "logits_to_keep" in inspect.signature(forward).parameters


def answer_logits(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits from the first labelled column on, and the tokens they predict (-100 where nothing is predicted).

    Returns `(B, L', vocab)` logits and `(B, L')` targets. The model runs its LM head only on those columns
    (`logits_to_keep`), so prompt positions before them never reach the vocabulary projection: with a 32k-128k
    vocabulary the full logits tensor dominates time and memory. The call goes through the model's own forward, so
    DDP, FSDP and DeepSpeed wrappers keep working.
    """
    targets = labels[:, 1:]
    labelled_columns = (targets != IGNORE_INDEX).any(0).nonzero()
    first = int(labelled_columns[0]) if len(labelled_columns) else targets.shape[1]
    if _accepts_logits_to_keep(model):
        # Positions first..L-1 are kept; the last one predicts nothing and is dropped.
        logits = model(
            input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=input_ids.shape[1] - first
        ).logits[:, :-1]
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, first:-1]
    return logits, targets[:, first:]


def token_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Log-probability of every labelled token, `(B, L')` with 0 where unlabelled, its mask, and the batch's padded
    length L. Only the label's logit is gathered and a logsumexp taken: no softmax tensor is kept."""
    logits, targets = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    mask = targets != IGNORE_INDEX
    logits = logits.float()
    gold = logits.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (gold - torch.logsumexp(logits, dim=-1)) * mask, mask, batch["input_ids"].shape[1]


@torch.no_grad()
def score_answers(
    model: Any, examples: Sequence[Encoded], pad_token_id: int, batch_size: int = 64
) -> list[AnswerScore]:
    """Score every example's labelled tokens in batches; the softmax is taken at labelled positions only."""
    model.eval()
    device = next(model.parameters()).device
    scores: list[AnswerScore] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = pad_batch([e.input_ids for e in chunk], pad_token_id, labels=[e.labels for e in chunk])
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, targets = answer_logits(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        positions = targets != IGNORE_INDEX
        logits, gold = logits[positions].float(), targets[positions]
        logprobs = torch.log_softmax(logits, dim=-1)
        token_logprobs = logprobs.gather(1, gold[:, None])[:, 0]
        hits = logits.argmax(-1) == gold
        counts = positions.sum(1).tolist()
        for lp, hit in zip(token_logprobs.split(counts), hits.split(counts), strict=True):
            scores.append(AnswerScore(lp.tolist(), hit.tolist()))
    return scores
