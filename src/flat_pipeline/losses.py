"""The FLAT loss (shared/spec/flat.md §1): maximise an f-divergence between template answers and forget answers.

Per example, with S_t the template answer's score and S_f the forget answer's score under the model,

    loss = -g*(S_t) + f*(g*(S_f))

where g* is the divergence's output activation and f* its convex conjugate; the batch loss is the mean. Minimising it
raises the template score and lowers the forget score, each weighted by the divergence (flat.md §1.2).

Only the paper's divergences that push the right way are registered: KL, Jensen-Shannon, Pearson, Total Variation
(the paper's Table 2) and Jeffrey. The reference code's Reverse-KL, Squared-Hellinger and Neyman flip the sign of the
activation's input and push the template probability down, so they are not offered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCORES = ("prob", "logprob")


@dataclass(frozen=True)
class Divergence:
    """An f-divergence in its variational form: output activation g* and convex conjugate f*."""

    activation: Callable[[torch.Tensor], torch.Tensor]
    conjugate: Callable[[torch.Tensor], torch.Tensor]


def _identity(v: torch.Tensor) -> torch.Tensor:
    return v


DIVERGENCES: dict[str, Divergence] = {
    "kl": Divergence(_identity, lambda u: torch.exp(u - 1.0)),
    "js": Divergence(lambda v: math.log(2.0) - F.softplus(-v), lambda u: -torch.log(2.0 - torch.exp(u))),
    "pearson": Divergence(_identity, lambda u: u * u / 4.0 + u),
    "tv": Divergence(lambda v: 0.5 * torch.tanh(v), _identity),
    # Jeffrey's conjugate has no closed form; the reference code uses this cubic expansion (flat.md §1.2).
    "jeffrey": Divergence(_identity, lambda u: u + u * u / 4.0 + u**3 / 16.0),
}


def _divergence(name: str) -> Divergence:
    if name not in DIVERGENCES:
        raise ValueError(f"parameter unlearn.divergence: expected one of {sorted(DIVERGENCES)}, got '{name}'")
    return DIVERGENCES[name]


def flat_loss(template_scores: torch.Tensor, forget_scores: torch.Tensor, divergence: str = "kl") -> torch.Tensor:
    """FLAT loss from per-example scores: mean over the batch of -g*(S_template) + f*(g*(S_forget)).

    Args:
        template_scores: (B,) scores of the template answers (see `sequence_scores`).
        forget_scores: (B,) scores of the forget answers to the same prompts.
        divergence: a key of DIVERGENCES.
    """
    div = _divergence(divergence)
    return (-div.activation(template_scores) + div.conjugate(div.activation(forget_scores))).mean()


def sequence_scores(token_logprobs: torch.Tensor, mask: torch.Tensor, score: str = "prob") -> torch.Tensor:
    """Per-example score of an answer from its token log-probabilities (answer tokens where `mask` is true).

    `prob` is the paper's score, the mean per-token probability; `logprob` is the mean token log-probability, whose
    gradient does not vanish on a memorised answer (p close to 1) or a template the model has never produced (p close
    to 0). The conjugates were written for scores in [0, 1]; on log-probabilities (<= 0) the forget-side weights stay
    positive for KL, JS, TV and Jeffrey, while Pearson's, 1 + S/2, turns negative below S = -2: Pearson then holds
    the forget answer's mean log-probability at -2 instead of pushing it lower.
    """
    if score not in SCORES:
        raise ValueError(f"parameter unlearn.score: expected one of {SCORES}, got '{score}'")
    mask = mask.to(token_logprobs.dtype)
    values = token_logprobs.exp() if score == "prob" else token_logprobs
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def code_compat_flat_loss(
    template_token_probs: torch.Tensor,
    template_mask: torch.Tensor,
    forget_token_probs: torch.Tensor,
    forget_mask: torch.Tensor,
    divergence: str = "kl",
    *,
    template_positions: int | None = None,
    forget_positions: int | None = None,
) -> torch.Tensor:
    """The reference code's form (flat.md §1.3), for matching its numbers.

    Each side's score is one scalar per batch: the sum of answer-token probabilities divided by B·(L-1), every padded
    and prompt position counted; the divergence is then applied once to the two batch scalars. By default the
    inputs are taken to be the full (B, L-1) shifted positions; pass `*_positions` = B·(L-1) when they hold only a
    slice of them.
    """
    div = _divergence(divergence)

    def batch_score(probs: torch.Tensor, mask: torch.Tensor, positions: int | None) -> torch.Tensor:
        return (probs * mask.to(probs.dtype)).sum() / (positions or probs.numel())

    s_template = batch_score(template_token_probs, template_mask, template_positions)
    s_forget = batch_score(forget_token_probs, forget_mask, forget_positions)
    return -div.activation(s_template) + div.conjugate(div.activation(s_forget))


# ------------------------------------------------------------------------ baselines' preference-style losses


def npo_loss(logratio: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """NPO's forget loss, -(2/beta) * mean log sigmoid(-beta * (log pi(y) - log pi_ref(y))), from per-sequence
    log-ratios of the model to the reference. It is ~ -2 * mean logratio near 0 and saturates as the ratio falls."""
    return -(2.0 / beta) * F.logsigmoid(-beta * logratio).mean()


def simnpo_loss(mean_nll: torch.Tensor, beta: float = 4.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO's forget loss, -(2/beta) * mean log sigmoid(beta * (NLL/|y| - delta)), from per-sequence
    length-normalised NLLs: NPO without a reference model."""
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll - delta)).mean()


def dpo_loss(chosen_logratio: torch.Tensor, rejected_logratio: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO, -(2/beta) * mean log sigmoid(beta * (chosen - rejected)), from per-sequence log-ratios to the reference of
    the preferred (template) and the rejected (forget) answers."""
    return -(2.0 / beta) * F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
