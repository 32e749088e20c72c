"""Every registered unlearning method: its step runs and moves the model the right way, and only the resources it
declares (retain data, a reference model) are built."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

import flat_pipeline.training.unlearn as unlearn_module
from flat_pipeline.losses import dpo_loss, npo_loss, simnpo_loss
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.training.methods import METHODS, answer_nll, side
from flat_pipeline.training.unlearn import UnlearnCollator, UnlearnConfig, tokenize_forget, tokenize_retain, unlearn


@pytest.fixture
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="module")
def retain_rows(small_world):
    return Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])


def test_preference_losses_at_their_closed_forms():
    # At a zero log-ratio every sigmoid is 1/2: loss = (2 / beta) * log 2.
    zero = torch.zeros(3)
    assert npo_loss(zero, beta=0.1).item() == pytest.approx(20 * math.log(2), rel=1e-6)
    assert dpo_loss(zero, zero, beta=0.5).item() == pytest.approx(4 * math.log(2), rel=1e-6)
    # SimNPO at mean NLL 1, beta 2, delta 0: -(2/2) * log sigmoid(2) = log(1 + e^-2).
    assert simnpo_loss(torch.ones(2), beta=2.0).item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-6)
    # Lower forget likelihood (more negative log-ratio) gives a lower NPO loss: it pushes the ratio down.
    assert npo_loss(torch.full((2,), -5.0)).item() < npo_loss(zero).item()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_step_lowers_the_forget_answers_likelihood(method, bundle, forget_templates, retain_rows):
    """One gradient step of each method on a batch of a random model: finite loss, the weights move, and for the
    methods whose loss pushes the forget answers down directly (GA, GD, KL, NPO, SimNPO, IdkDPO) the forget answers
    become less likely. FLAT's forget weight is ~0 on a random model (exp(S_f - 1) at S_f ~ log 1/V): its direction
    is tested on a finetuned model in test_unlearn.py; IdkNLL and RMU act through templates and hidden states."""
    # The retain terms are still computed (and must be finite) but weigh nothing: the step's direction is the
    # forget term's. SimNPO at its own beta 4.5 is saturated on a random model (mean NLL ~ log V): a smaller beta.
    own = {"simnpo": {"beta": 0.1}}.get(method, {})
    config = UnlearnConfig(method=method, rmu_layer=0, retain_weight=0.0, **own)
    spec = METHODS[method]
    tok = bundle.tokenizer
    encoded = tokenize_forget(forget_templates.select(range(8)), tok, PromptFormat(), 512, spec.needs_templates)
    retain = tokenize_retain(retain_rows, tok, PromptFormat(), 512) if spec.needs_retain else None
    batch = UnlearnCollator(tok.pad_token_id, "fixed", 0, retain)([encoded[i] for i in range(8)])
    reference = unlearn_module.frozen_reference(bundle.model) if spec.needs_reference else None
    model = bundle.model
    model.train()
    before_nll = answer_nll(model, side(batch, "forget")).item()
    before = [p.detach().clone() for p in model.parameters()]
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    loss, logs = spec.step(model, batch, reference, config)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in logs.values())
    loss.backward()
    optimiser.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    if method not in ("flat", "idk_nll", "rmu"):
        assert answer_nll(model, side(batch, "forget")).item() > before_nll


@pytest.mark.parametrize("method", sorted(METHODS))
def test_only_declared_resources_are_built(method, bundle, forget_templates, retain_rows, monkeypatch):
    references, retain_sets = [], []
    real_reference, real_retain = unlearn_module.frozen_reference, unlearn_module.tokenize_retain
    monkeypatch.setattr(unlearn_module, "frozen_reference", lambda m: references.append(1) or real_reference(m))
    monkeypatch.setattr(
        unlearn_module, "tokenize_retain", lambda *a, **k: retain_sets.append(1) or real_retain(*a, **k)
    )
    config = UnlearnConfig(method=method, num_train_epochs=1, per_device_train_batch_size=20, learning_rate=1e-4)
    _, history = unlearn(bundle, forget_templates, config, retain_rows=retain_rows)
    spec = METHODS[method]
    assert bool(references) == spec.needs_reference and bool(retain_sets) == spec.needs_retain
    assert len(history["unlearn_loss"]) == 2  # 40 forget items / 20


def test_a_method_that_needs_retain_data_refuses_an_empty_retain_set(bundle, forget_templates):
    with pytest.raises(ValueError, match="unlearn method 'gd' needs retain data"):
        unlearn(bundle, forget_templates, UnlearnConfig(method="gd"), retain_rows=None)


def test_reference_model_is_frozen(bundle):
    reference = unlearn_module.frozen_reference(bundle.model)
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    assert reference is not bundle.model and next(reference.parameters()).dtype == next(bundle.model.parameters()).dtype
