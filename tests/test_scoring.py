"""Batched scoring: the prefix-cache candidate scorer equals scoring each (prompt, answer) sequence alone."""

from __future__ import annotations

import pytest
import torch

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import encode_example, encode_prompt
from flat_pipeline.scoring import score_answers, score_candidates


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


def _one_by_one(model, input_ids, prompt_length):
    """Reference: the whole sequence alone, full-vocabulary softmax at every position."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([input_ids])).logits[0].float()
    logprobs = torch.log_softmax(logits[prompt_length - 1 : -1], dim=-1)
    gold = torch.tensor(input_ids[prompt_length:])
    token_logprobs = logprobs.gather(1, gold[:, None])[:, 0]
    probs = logprobs.exp()
    mean = (probs * logprobs).sum(-1)
    std = (probs * (logprobs.double() - mean.double()[:, None]).square()).sum(-1).sqrt().float()
    return token_logprobs, logprobs.argmax(-1) == gold, (token_logprobs - mean) / std


def test_prefix_cache_scoring_equals_scoring_each_sequence_alone(bundle, small_world):
    rows = small_world["forget10_perturbed"][:7]
    tok = bundle.tokenizer
    prompts = [encode_prompt(tok, r["question"]) for r in rows]
    # Candidates of different lengths and counts per prompt, so padding on both sides is exercised.
    texts = [[r["answer"], r["paraphrased_answer"], *r["perturbed_answer"][: 1 + i % 5]] for i, r in enumerate(rows)]
    candidates = [
        [encode_example(tok, t, r["question"]).input_ids[len(p) :] for t in group]
        for r, p, group in zip(rows, prompts, texts, strict=True)
    ]
    scored = score_candidates(bundle.model, prompts, candidates, tok.pad_token_id, batch_size=3, z_scores="all")
    assert [len(s) for s in scored] == [len(g) for g in texts]
    for prompt, group, scores in zip(prompts, candidates, scored, strict=True):
        for answer, score in zip(group, scores, strict=True):
            logprobs, hits, z = _one_by_one(bundle.model, prompt + answer, len(prompt))
            assert score.token_logprobs == pytest.approx(logprobs.tolist(), abs=1e-5)
            assert score.argmax_hits == hits.tolist()
            assert score.z_scores == pytest.approx(z.tolist(), abs=1e-4)


def test_candidate_scores_match_the_right_padded_scorer(bundle, small_world):
    rows = small_world["retain_perturbed"][:5]
    tok = bundle.tokenizer
    examples = [encode_example(tok, r["answer"], r["question"]) for r in rows]
    prompts = [e.input_ids[: e.prompt_length] for e in examples]
    candidates = [[e.input_ids[e.prompt_length :]] for e in examples]
    cached = score_candidates(bundle.model, prompts, candidates, tok.pad_token_id)
    padded = score_answers(bundle.model, examples, tok.pad_token_id)
    for c, p in zip(cached, padded, strict=True):
        assert c[0].mean_nll == pytest.approx(p.mean_nll, abs=1e-5)


def test_z_scores_only_for_the_first_candidate_by_default(bundle, small_world):
    row = small_world["forget10_perturbed"][0]
    tok = bundle.tokenizer
    prompt = encode_prompt(tok, row["question"])
    answers = [
        encode_example(tok, t, row["question"]).input_ids[len(prompt) :]
        for t in (row["answer"], row["paraphrased_answer"])
    ]
    first, second = score_candidates(bundle.model, [prompt], [answers], tok.pad_token_id)[0]
    assert len(first.z_scores) == len(first.token_logprobs) and second.z_scores == []
    with pytest.raises(ValueError, match="z_scores must be"):
        score_candidates(bundle.model, [prompt], [answers], tok.pad_token_id, z_scores="some")


def test_mismatched_inputs_are_rejected(bundle):
    with pytest.raises(ValueError, match="2 prompts but 1 candidate lists"):
        score_candidates(bundle.model, [[1, 2], [1, 3]], [[[4]]], 0)
