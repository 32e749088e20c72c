"""Unlearning methods, registered by name in `METHODS`: FLAT and the baselines it is compared with.

A method is one step-loss function plus what it needs: retain data, a frozen reference model (the original model,
in eval mode, without gradients), template answers. The trainer builds a reference model and tokenises retain data
only for methods that declare them. Definitions: spec benchmarks-and-metrics.md §1.2 (open-unlearning's forms, with
their defaults) and flat.md §5; notation: NLL = mean token cross-entropy over a batch's answer tokens, log π(y) = the
summed answer-token log-probability of one sequence.

A step function takes `(model, batch, reference, config)` and returns `(loss, logs)`, where `batch` holds `forget_*`,
`template_*` and `retain_*` tensors (`input_ids`, `attention_mask`, `labels`) as the method needs, and `logs` maps
names to detached scalars averaged into the training log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from flat_pipeline.losses import code_compat_flat_loss, dpo_loss, flat_loss, npo_loss, sequence_scores, simnpo_loss
from flat_pipeline.prompts import IGNORE_INDEX
from flat_pipeline.scoring import answer_logits, token_logprobs

Batch = Mapping[str, torch.Tensor]
StepResult = tuple[torch.Tensor, dict[str, torch.Tensor]]


def side(batch: Batch, name: str) -> dict[str, torch.Tensor]:
    """The `input_ids`, `attention_mask` and `labels` of one side (forget, template, retain) of a batch."""
    return {key: batch[f"{name}_{key}"] for key in ("input_ids", "attention_mask", "labels")}


def answer_nll(model: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean token cross-entropy over every answer token of the batch (the LM head runs on answer columns only)."""
    logits, targets = answer_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def sequence_logprob(model: Any, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the summed answer-token log-probability and the number of answer tokens."""
    logprobs, mask, _ = token_logprobs(model, inputs)
    return logprobs.sum(1), mask.sum(1)


def reference_logprob(reference: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return sequence_logprob(reference, inputs)[0]


def _retain_nll(model: Any, batch: Batch, config: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    nll = answer_nll(model, side(batch, "retain"))
    return config.retain_weight * nll, {"retain_nll": nll.detach()}


# ------------------------------------------------------------------------------------------------- methods


def flat_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """FLAT: maximise an f-divergence between template answers and forget answers (forget data only)."""
    t_lp, t_mask, t_len = token_logprobs(model, side(batch, "template"))
    f_lp, f_mask, f_len = token_logprobs(model, side(batch, "forget"))
    t_scores = sequence_scores(t_lp, t_mask, config.score)
    f_scores = sequence_scores(f_lp, f_mask, config.score)
    if config.code_compat:
        loss = code_compat_flat_loss(
            t_lp.exp() * t_mask,
            t_mask,
            f_lp.exp() * f_mask,
            f_mask,
            config.divergence,
            template_positions=t_lp.shape[0] * (t_len - 1),
            forget_positions=f_lp.shape[0] * (f_len - 1),
        )
    else:
        loss = flat_loss(t_scores, f_scores, config.divergence)
    # Detached tensors, not floats: `.item()` here would synchronise with the GPU on every step.
    return loss, {"template_score": t_scores.detach().mean(), "forget_score": f_scores.detach().mean()}


def ga_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """Gradient ascent: raise the forget answers' NLL."""
    nll = answer_nll(model, side(batch, "forget"))
    return -config.forget_weight * nll, {"forget_nll": nll.detach()}


def gd_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """Gradient difference: gradient ascent on forget answers, descent on retain answers."""
    nll = answer_nll(model, side(batch, "forget"))
    retain, logs = _retain_nll(model, batch, config)
    return -config.forget_weight * nll + retain, {"forget_nll": nll.detach(), **logs}


def kl_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """Gradient ascent on forget answers plus KL(reference || model) per retain answer token."""
    nll = answer_nll(model, side(batch, "forget"))
    inputs = side(batch, "retain")
    logits, targets = answer_logits(model, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    with torch.no_grad():
        ref_logits, _ = answer_logits(reference, inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    mask = targets != IGNORE_INDEX
    log_p = torch.log_softmax(logits[mask].float(), dim=-1)
    log_ref = torch.log_softmax(ref_logits[mask].float(), dim=-1)
    kl = F.kl_div(log_p, log_ref, log_target=True, reduction="batchmean")
    return -config.forget_weight * nll + config.retain_weight * kl, {
        "forget_nll": nll.detach(),
        "retain_kl": kl.detach(),
    }


def npo_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """NPO: push the forget answers' log-likelihood below the reference model's, saturating; plus retain NLL."""
    forget = side(batch, "forget")
    logratio = sequence_logprob(model, forget)[0] - reference_logprob(reference, forget)
    forget_loss = npo_loss(logratio, config.beta)
    retain, logs = _retain_nll(model, batch, config)
    return config.forget_weight * forget_loss + retain, {"forget_logratio": logratio.detach().mean(), **logs}


def simnpo_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """SimNPO: NPO without a reference, on the length-normalised NLL; plus retain NLL."""
    logprob, length = sequence_logprob(model, side(batch, "forget"))
    mean_nll = -logprob / length
    forget_loss = simnpo_loss(mean_nll, config.beta, config.delta)
    retain, logs = _retain_nll(model, batch, config)
    return config.forget_weight * forget_loss + retain, {"forget_nll": mean_nll.detach().mean(), **logs}


def idk_dpo_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """IdkDPO: prefer the template ("I don't know") answer over the forget answer, relative to the reference."""
    template, forget = side(batch, "template"), side(batch, "forget")
    chosen = sequence_logprob(model, template)[0] - reference_logprob(reference, template)
    rejected = sequence_logprob(model, forget)[0] - reference_logprob(reference, forget)
    forget_loss = dpo_loss(chosen, rejected, config.beta)
    retain, logs = _retain_nll(model, batch, config)
    return config.forget_weight * forget_loss + retain, {"margin": (chosen - rejected).detach().mean(), **logs}


def idk_nll_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """IdkNLL: finetune on the template answers to the forget prompts; plus retain NLL."""
    nll = answer_nll(model, side(batch, "template"))
    retain, logs = _retain_nll(model, batch, config)
    return config.forget_weight * nll + retain, {"template_nll": nll.detach(), **logs}


def _hidden_states(model: Any, inputs: Mapping[str, torch.Tensor], layer: int) -> torch.Tensor:
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], output_hidden_states=True)
    return out.hidden_states[layer]


def rmu_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """RMU: steer the forget answers' hidden states at one layer towards a fixed random direction (scaled by
    `steering_coeff`) and keep the retain answers' hidden states at the reference model's."""
    layer = config.rmu_layer
    forget = side(batch, "forget")
    hidden = _hidden_states(model, forget, layer)
    generator = torch.Generator().manual_seed(config.seed)
    direction = torch.rand(hidden.shape[-1], generator=generator).to(hidden.device, hidden.dtype)
    target = config.steering_coeff * direction / direction.norm()
    forget_mask = forget["labels"] != IGNORE_INDEX
    forget_loss = F.mse_loss(hidden[forget_mask].float(), target.float().expand(int(forget_mask.sum()), -1))
    retain = side(batch, "retain")
    retain_mask = retain["labels"] != IGNORE_INDEX
    retain_hidden = _hidden_states(model, retain, layer)[retain_mask]
    with torch.no_grad():
        reference_hidden = _hidden_states(reference, retain, layer)[retain_mask]
    retain_loss = F.mse_loss(retain_hidden.float(), reference_hidden.float())
    loss = config.forget_weight * forget_loss + config.retain_weight * retain_loss
    return loss, {"forget_mse": forget_loss.detach(), "retain_mse": retain_loss.detach()}


@dataclass(frozen=True)
class Method:
    """A registered unlearning method: its step loss and the resources it reads."""

    step: Callable[[Any, Batch, Any, Any], StepResult]
    needs_retain: bool
    needs_reference: bool
    needs_templates: bool


METHODS: dict[str, Method] = {
    "flat": Method(flat_step, needs_retain=False, needs_reference=False, needs_templates=True),
    "ga": Method(ga_step, needs_retain=False, needs_reference=False, needs_templates=False),
    "gd": Method(gd_step, needs_retain=True, needs_reference=False, needs_templates=False),
    "kl": Method(kl_step, needs_retain=True, needs_reference=True, needs_templates=False),
    "npo": Method(npo_step, needs_retain=True, needs_reference=True, needs_templates=False),
    "simnpo": Method(simnpo_step, needs_retain=True, needs_reference=False, needs_templates=False),
    "idk_dpo": Method(idk_dpo_step, needs_retain=True, needs_reference=True, needs_templates=True),
    "idk_nll": Method(idk_nll_step, needs_retain=True, needs_reference=False, needs_templates=True),
    "rmu": Method(rmu_step, needs_retain=True, needs_reference=True, needs_templates=False),
}
