"""Teacher-forced scoring of answers: per-token log-probabilities and argmax hits on answer tokens only."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

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


@dataclass(frozen=True)
class CandidateScore(AnswerScore):
    """An `AnswerScore` plus, per answer token, Min-K%++'s z = (log p(x_t) - mu_t) / sigma_t, where mu_t and sigma_t
    are the mean and standard deviation of log p(v) under the model's own next-token distribution (the variance
    clamped at 1e-6, as open-unlearning)."""

    z_scores: list[float]


def _candidate_stats(
    logits: torch.Tensor, gold: torch.Tensor, mask: torch.Tensor, with_z: torch.Tensor
) -> list[CandidateScore]:
    """Scores of right-padded candidates from the logits that predict them: `(M, A, V)` logits, `(M, A)` gold ids.

    Padded positions are dropped before the softmax; z-scores (three more passes over the vocabulary) are computed
    only for the candidates flagged in `with_z` and are empty for the others.
    """
    counts = mask.sum(1).tolist()
    logprobs = torch.log_softmax(logits[mask.bool()].float(), dim=-1)  # (tokens, V)
    gold = gold[mask.bool()]
    gold_logprobs = logprobs.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    hits = logprobs.argmax(-1) == gold
    z_rows = with_z.repeat_interleave(mask.sum(1))
    z = torch.zeros_like(gold_logprobs)
    if z_rows.any():
        chosen = logprobs[z_rows]
        probs = chosen.exp()
        mean = (probs * chosen).sum(-1)
        # open-unlearning's definition, so that Min-K%++ AUCs are comparable with its tables: the one-pass variance
        # E[(log p)^2] - mu^2 in float32, clamped at 1e-6 before the square root (sigma >= 1e-3 where the model is
        # near-certain), rather than a two-pass variance, which would differ where the spread of log p is tiny.
        variance = (probs * chosen.square()).sum(-1) - mean.square()
        z[z_rows] = (gold_logprobs[z_rows] - mean) / variance.clamp(min=1e-6).sqrt()
    flat_logprobs, flat_hits, flat_z = gold_logprobs.tolist(), hits.tolist(), z.tolist()
    scores, start = [], 0
    for n, wants_z in zip(counts, with_z.tolist(), strict=True):
        end = start + n
        z_part = flat_z[start:end] if wants_z else []
        scores.append(CandidateScore(flat_logprobs[start:end], flat_hits[start:end], z_part))
        start = end
    return scores


@torch.no_grad()
def score_candidates(
    model: Any,
    prompts: Sequence[Sequence[int]],
    candidates: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
    *,
    batch_size: int = 32,
    z_scores: str = "first",
    progress: bool = False,
) -> list[list[CandidateScore]]:
    """Teacher-forced scores of several candidate answers per prompt (e.g. TOFU's answer, paraphrase and perturbed
    answers), running each prompt once.

    `prompts[i]` are the prompt's token ids and `candidates[i]` the token ids of each candidate answer that follows it
    (eos included, as `encode_example` builds them). A batch of `batch_size` prompts goes through the model once,
    left-padded with explicit positions, and its key/value cache is repeated for that prompt's candidates; the
    candidates then run right-padded against the cache. The first answer token is predicted by the prompt's last
    position, the others by the candidate's own positions. The numbers equal scoring every (prompt, answer) sequence
    on its own to float rounding (a test checks 1e-5).

    `z_scores`: for which candidates to compute Min-K%++'s z-scores: "first" (the true answer, the only one the
    membership attacks read), "all" or "none"; the others get an empty list.
    """
    if z_scores not in ("first", "all", "none"):
        raise ValueError(f"score_candidates: z_scores must be 'first', 'all' or 'none', got {z_scores!r}")
    if len(prompts) != len(candidates):
        raise ValueError(f"score_candidates: {len(prompts)} prompts but {len(candidates)} candidate lists")
    model.eval()
    device = next(model.parameters()).device
    results: list[list[CandidateScore]] = []
    bar = None if progress else True  # None: on a terminal only (in a log file each redraw would pile up)
    for start in tqdm(range(0, len(prompts), batch_size), desc="scoring", disable=bar, leave=False):
        chunk_prompts = prompts[start : start + batch_size]
        chunk_candidates = candidates[start : start + batch_size]
        prompt_batch = pad_batch(chunk_prompts, pad_token_id, padding_side="left")
        prompt_mask = prompt_batch["attention_mask"].to(device)
        prompt_positions = (prompt_mask.cumsum(1) - 1).clamp(min=0)
        prompt_out = model(
            input_ids=prompt_batch["input_ids"].to(device),
            attention_mask=prompt_mask,
            position_ids=prompt_positions,
            use_cache=True,
            logits_to_keep=1,
        )
        counts = [len(c) for c in chunk_candidates]
        owner = torch.repeat_interleave(
            torch.arange(len(chunk_prompts), device=device), torch.tensor(counts, device=device)
        )
        cache = prompt_out.cache
        cache.batch_select_indices(owner)
        flat = [ids for group in chunk_candidates for ids in group]
        answer_batch = pad_batch(flat, pad_token_id)
        answer_ids = answer_batch["input_ids"].to(device)
        answer_mask = answer_batch["attention_mask"].to(device)
        prompt_lengths = prompt_mask.sum(1)[owner]
        answer_out = model(
            input_ids=answer_ids,
            attention_mask=torch.cat([prompt_mask[owner], answer_mask], dim=1),
            position_ids=prompt_lengths[:, None] + torch.arange(answer_ids.shape[1], device=device),
            cache=cache,
        )
        predicting = torch.cat([prompt_out.logits[owner, -1:], answer_out.logits[:, :-1]], dim=1)
        first = torch.tensor([i == 0 for n in counts for i in range(n)], device=device)
        with_z = {"first": first, "all": torch.ones_like(first), "none": torch.zeros_like(first)}[z_scores]
        scores = _candidate_stats(predicting, answer_ids, answer_mask, with_z)
        for n in counts:
            results.append(scores[:n])
            scores = scores[n:]
    return results
