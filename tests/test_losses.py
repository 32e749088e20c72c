import math

import pytest
import torch

from flat_pipeline.losses import DIVERGENCES, code_compat_flat_loss, flat_loss, sequence_scores

CLOSED_FORMS = {  # flat.md §1.2, per example: loss(S_template, S_forget)
    "kl": lambda t, f: -t + torch.exp(f - 1),
    "js": lambda t, f: torch.nn.functional.softplus(-t) + torch.nn.functional.softplus(f) - 2 * math.log(2),
    "pearson": lambda t, f: -t + f + f**2 / 4,
    "tv": lambda t, f: -0.5 * torch.tanh(t) + 0.5 * torch.tanh(f),
    "jeffrey": lambda t, f: -t + f + f**2 / 4 + f**3 / 16,
}


def test_every_registered_divergence_has_a_closed_form_test():
    assert set(DIVERGENCES) == set(CLOSED_FORMS)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize("score", ["prob", "logprob"])
def test_divergence_equals_its_closed_form_on_random_scores(name, score):
    generator = torch.Generator().manual_seed(0)
    template, forget = torch.rand(64, generator=generator, dtype=torch.float64), torch.rand(64, dtype=torch.float64)
    if score == "logprob":
        template, forget = template.log(), forget.log()
    expected = CLOSED_FORMS[name](template, forget).mean()
    assert torch.allclose(flat_loss(template, forget, name), expected, atol=1e-12)


@pytest.mark.parametrize("name", sorted(CLOSED_FORMS))
@pytest.mark.parametrize(("template", "forget"), [(0.05, 0.3), (0.3, 0.05), (0.9, 0.95), (-2.0, -0.1)])
def test_gradient_raises_the_template_score_and_lowers_the_forget_score(name, template, forget):
    t = torch.tensor([template], dtype=torch.float64, requires_grad=True)
    f = torch.tensor([forget], dtype=torch.float64, requires_grad=True)
    flat_loss(t, f, name).backward()
    # Gradient descent moves each score against its gradient.
    assert t.grad.item() < 0, "descent must raise the template score"
    assert f.grad.item() > 0, "descent must lower the forget score"


def test_unknown_divergence_and_score_are_refused():
    with pytest.raises(ValueError, match="unlearn.divergence.*'reverse_kl'"):
        flat_loss(torch.zeros(2), torch.zeros(2), "reverse_kl")
    with pytest.raises(ValueError, match="unlearn.score"):
        sequence_scores(torch.zeros(1, 2), torch.ones(1, 2), "entropy")


def test_sequence_scores_average_over_answer_tokens_only():
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.2, 0.1, 0.3]]))
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert torch.allclose(sequence_scores(logprobs, mask, "prob"), torch.tensor([0.375, 0.2]))
    expected = torch.tensor([(math.log(0.5) + math.log(0.25)) / 2, (math.log(0.2) + math.log(0.1) + math.log(0.3)) / 3])
    assert torch.allclose(sequence_scores(logprobs, mask, "logprob"), expected)


def test_code_compat_divides_by_every_position_of_the_batch():
    """Reference code: sum of answer-token probabilities / (B * (L-1)), divergence applied to the batch scalars."""
    template_probs = torch.tensor([[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.25, 0.75]])
    template_mask = torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]])
    forget_probs = torch.tensor([[0.0, 0.9, 0.8, 0.7], [0.0, 0.6, 0.0, 0.0]])
    forget_mask = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0]])
    s_template = (0.5 + 0.5 + 0.25 + 0.75) / 8  # 0.25
    s_forget = (0.9 + 0.8 + 0.7 + 0.6) / 8  # 0.375
    expected = -s_template + math.exp(s_forget - 1)
    loss = code_compat_flat_loss(template_probs, template_mask, forget_probs, forget_mask, "kl")
    assert loss.item() == pytest.approx(expected, abs=1e-7)
    # Not the per-example form: the paper's score averages each answer over its own tokens.
    paper = flat_loss(torch.tensor([0.5, 0.5]), torch.tensor([0.8, 0.6]), "kl")
    assert abs(paper.item() - expected) > 0.01
