"""Unlearning methods, registered by name in `METHODS`: FLAT and the baselines it is compared with.

A method is one step-loss function plus what it needs: retain data, a frozen reference model (the original model,
in eval mode, without gradients), template answers. The trainer builds a reference model and tokenises retain data
only for methods that declare them. Definitions: spec benchmarks-and-metrics.md §1.2 (open-unlearning's forms, with
their defaults) and flat.md §5; notation: NLL = mean token cross-entropy over a batch's answer tokens, log π(y) = the
summed answer-token log-probability of one sequence.

A step function takes `(model, batch, reference, config)` and returns `(loss, logs)`, where `batch` holds `forget_*`,
`template_*` and `retain_*` tensors (`input_ids`, `attention_mask`, `labels`) as the method needs, and `logs` maps
names to detached scalars averaged into the training log.

Two baselines average differently in their papers and in open-unlearning; `UnlearnConfig.loss_form` picks the form
(`LOSS_FORMS`). Every other method computes the same loss in both.

- `kl` (TOFU, Maini et al. 2024, §4 "KL minimization"): forget term -NLL_f; retain term
  `paper`: (1/|R|) Σ_s (1/|s|) Σ_i KL(π_ref(·|s_<i) ‖ π_θ(·|s_<i)), a per-sequence mean over the answer tokens s
  of each retain sequence, then the mean over sequences;
  `open_unlearning`: the same KL summed over every position of the padded retain batch (prompt, answer, padding and
  the last position) and divided by B·L, as its GradDiff with `retain_loss_type: KL` computes it.
- `rmu` (WMDP, Li et al. 2024, §5 "RMU"): forget term (1/|F|) Σ_x (1/L_x) Σ_t ‖h_θ(t) − c·u‖², retain term
  (1/|R|) Σ_x (1/L_x) Σ_t ‖h_θ(t) − h_ref(t)‖², with h the output of one decoder layer at the answer tokens t.
  `paper`: that per-sequence mean, with the squared distance averaged over hidden units as the paper's released code
  does (it only rescales c² and the weights by the width);
  `open_unlearning`: mean_j(S_j)·mean_i(1/n_i), with S_j the sum of sequence j's distances and n_i its answer length:
  its `compute_activation_loss` divides a [B] tensor by a [B, 1] one. It equals the paper's form only when every
  sequence of a side has the same length.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from flat_pipeline.config import ParameterError
from flat_pipeline.losses import code_compat_flat_loss, dpo_loss, flat_loss, npo_loss, sequence_scores, simnpo_loss
from flat_pipeline.prompts import IGNORE_INDEX
from flat_pipeline.scoring import answer_logits, token_logprobs

Batch = Mapping[str, torch.Tensor]
StepResult = tuple[torch.Tensor, dict[str, torch.Tensor]]

LOSS_FORMS = ("paper", "open_unlearning")


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


def _kl_to_reference(logits: torch.Tensor, reference_logits: torch.Tensor) -> torch.Tensor:
    """KL(reference ‖ model) at each position, `(..., vocab)` logits in, `(...)` out."""
    log_p = torch.log_softmax(logits.float(), dim=-1)
    log_ref = torch.log_softmax(reference_logits.float(), dim=-1)
    return F.kl_div(log_p, log_ref, log_target=True, reduction="none").sum(-1)


def retain_kl(model: Any, reference: Any, inputs: Mapping[str, torch.Tensor], form: str) -> torch.Tensor:
    """The retain side's KL(reference ‖ model) in `form` (module docstring)."""
    ids, attention = inputs["input_ids"], inputs["attention_mask"]
    if form == "open_unlearning":
        logits = model(input_ids=ids, attention_mask=attention).logits
        with torch.no_grad():
            reference_logits = reference(input_ids=ids, attention_mask=attention).logits
        return _kl_to_reference(logits, reference_logits).mean()
    logits, targets = answer_logits(model, ids, attention, inputs["labels"])
    with torch.no_grad():
        reference_logits, _ = answer_logits(reference, ids, attention, inputs["labels"])
    mask = (targets != IGNORE_INDEX).float()
    per_token = _kl_to_reference(logits, reference_logits) * mask
    return (per_token.sum(1) / mask.sum(1).clamp(min=1.0)).mean()


def kl_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """Gradient ascent on forget answers plus KL(reference ‖ model) on retain answers."""
    nll = answer_nll(model, side(batch, "forget"))
    kl = retain_kl(model, reference, side(batch, "retain"), config.loss_form)
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


def decoder_layer(model: Any, index: int, parameter: str = "unlearn.rmu_layer") -> torch.nn.Module:
    """Decoder layer `index` (0-based, open-unlearning's `model.layers.<index>`), found by name so that LoRA and
    other wrappers (`base_model.model.model.layers.<index>`) work too."""
    layers = [module for name, module in model.named_modules() if re.search(r"(^|\.)layers\.\d+$", name)]
    if not 0 <= index < len(layers):
        raise ParameterError(
            f"parameter {parameter}: expected a decoder layer index from 0 to {len(layers) - 1} (this model has "
            f"{len(layers)} layers; open-unlearning's numbering, the output of model.layers.<index>), got {index}"
        )
    return layers[index]


def layer_output(model: Any, inputs: Mapping[str, torch.Tensor], layer: int) -> torch.Tensor:
    """The hidden states that decoder layer `layer` outputs, caught with a forward hook as open-unlearning does."""
    caught: list[torch.Tensor] = []

    def catch(module: Any, args: Any, output: Any) -> None:
        caught.append(output[0] if isinstance(output, tuple) else output)

    handle = decoder_layer(model, layer).register_forward_hook(catch)
    try:
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    finally:
        handle.remove()
    return caught[0]


def activation_distance(hidden: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, form: str) -> torch.Tensor:
    """RMU's mean squared distance of `(B, L, H)` hidden states to `target` at the `(B, L)` masked tokens, in `form`
    (module docstring)."""
    mask = mask.float()
    per_token = (hidden.float() - target.float()).pow(2).mean(-1) * mask
    lengths = mask.sum(1).clamp(min=1.0)
    if form == "open_unlearning":
        return per_token.sum(1).mean() * (1.0 / lengths).mean()
    return (per_token.sum(1) / lengths).mean()


def rmu_step(model: Any, batch: Batch, reference: Any, config: Any) -> StepResult:
    """RMU: steer the forget answers' hidden states after decoder layer `rmu_layer` towards a fixed random direction
    (scaled by `steering_coeff`) and keep the retain answers' hidden states at the reference model's."""
    forget, retain = side(batch, "forget"), side(batch, "retain")
    hidden = layer_output(model, forget, config.rmu_layer)
    generator = torch.Generator().manual_seed(config.seed)
    direction = torch.rand(hidden.shape[-1], generator=generator).to(hidden.device, hidden.dtype)
    target = config.steering_coeff * direction / direction.norm()
    forget_loss = activation_distance(hidden, target, forget["labels"] != IGNORE_INDEX, config.loss_form)
    retain_hidden = layer_output(model, retain, config.rmu_layer)
    with torch.no_grad():
        reference_hidden = layer_output(reference, retain, config.rmu_layer)
    retain_loss = activation_distance(
        retain_hidden, reference_hidden, retain["labels"] != IGNORE_INDEX, config.loss_form
    )
    loss = config.forget_weight * forget_loss + config.retain_weight * retain_loss
    return loss, {"forget_mse": forget_loss.detach(), "retain_mse": retain_loss.detach()}


def check_rmu_model(model: Any, config: Any) -> None:
    decoder_layer(model, config.rmu_layer, f"{config.block}.rmu_layer")


@dataclass(frozen=True)
class Method:
    """A registered unlearning method: its step loss and the resources it reads."""

    step: Callable[[Any, Batch, Any, Any], StepResult]
    needs_retain: bool
    needs_reference: bool
    needs_templates: bool
    # the method's own values of the shared settings a config leaves unset (None): beta, delta, forget_weight
    defaults: Mapping[str, float] = field(default_factory=dict)
    # checks the settings against the model before training starts (RMU: the layer exists)
    check_model: Callable[[Any, Any], None] | None = None


# Used for a shared setting that neither the config nor the method's own defaults set.
SHARED_DEFAULTS = {"beta": 0.1, "delta": 0.0, "forget_weight": 1.0}


METHODS: dict[str, Method] = {
    "flat": Method(flat_step, needs_retain=False, needs_reference=False, needs_templates=True),
    "ga": Method(ga_step, needs_retain=False, needs_reference=False, needs_templates=False),
    "gd": Method(gd_step, needs_retain=True, needs_reference=False, needs_templates=False),
    "kl": Method(kl_step, needs_retain=True, needs_reference=True, needs_templates=False),
    "npo": Method(npo_step, needs_retain=True, needs_reference=True, needs_templates=False),
    # SimNPO's own beta, delta and gamma (Fan et al. 2024, as open-unlearning ships them), not NPO's beta 0.1
    "simnpo": Method(
        simnpo_step,
        needs_retain=True,
        needs_reference=False,
        needs_templates=False,
        defaults={"beta": 4.5, "delta": 0.0, "forget_weight": 0.125},
    ),
    "idk_dpo": Method(idk_dpo_step, needs_retain=True, needs_reference=True, needs_templates=True),
    "idk_nll": Method(idk_nll_step, needs_retain=True, needs_reference=False, needs_templates=True),
    "rmu": Method(
        rmu_step, needs_retain=True, needs_reference=True, needs_templates=False, check_model=check_rmu_model
    ),
}
