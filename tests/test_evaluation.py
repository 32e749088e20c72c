"""The evaluation library on a tiny random model and the small world: every registered metric, the retain reference
and the checks that run before any model work."""

from __future__ import annotations

import math

import pytest
from datasets import Dataset

from flat_pipeline.evaluation import (
    METRICS,
    EvaluateConfig,
    RetainReference,
    check_metrics,
    evaluate_model,
    evaluate_retain_model,
    evaluation_sets,
    item_table,
    tokenizer_fingerprint,
)
from flat_pipeline.metrics import tofu
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import encode_example
from flat_pipeline.scoring import score_answers

FAST = EvaluateConfig(max_new_tokens=12, completion_prompt_words=10, completion_max_new_tokens=12, knowmem_items=5)
TEMPLATES = ["I don't know.", "I have no idea who that is."]


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="module")
def sets(small_world):
    split = lambda name: Dataset.from_list(small_world[name])  # noqa: E731
    qa = {
        "forget": split("forget10_perturbed"),
        "retain": split("retain_perturbed"),
        "ra": split("real_authors_perturbed"),
        "wf": split("world_facts_perturbed"),
        "holdout": split("holdout10"),
    }
    return evaluation_sets(qa, split("passages"), qa["forget"], qa["holdout"])


@pytest.fixture(scope="module")
def retain_run(bundle, sets):
    return evaluate_retain_model(bundle, sets, list(METRICS), FAST, forget_split="forget10", templates=TEMPLATES)


def test_evaluation_sets_hold_every_role_and_the_passages_of_forget_and_holdout_authors(sets, small_world):
    assert set(sets) == {"forget", "retain", "ra", "wf", "holdout", "forget_passages", "holdout_passages"}
    forget_authors = {r["author"] for r in small_world["forget10"]}
    assert set(sets["forget_passages"]["author"]) == forget_authors
    assert len(sets["holdout_passages"]) == len({r["author"] for r in small_world["holdout10"]})


def test_every_registered_metric_is_computed_and_the_retain_model_is_its_own_reference(retain_run):
    summary, _, reference = retain_run
    assert set(summary) == set(METRICS)
    assert summary["forget_quality"] == pytest.approx(1.0)
    assert summary["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert 0 <= summary["model_utility"] <= 1  # a random model answers no real-authors question: a zero component
    assert summary["holdout_perplexity"] > 1
    for name, value in summary.items():
        assert not math.isnan(value), name
    assert reference.forget_split == "forget10" and len(reference.forget_truth_ratio) == 40


def test_q_a_prob_is_the_mean_of_per_item_answer_probabilities(bundle, sets, retain_run):
    _, ctx, _ = retain_run
    rows = sets["forget"]
    examples = [encode_example(bundle.tokenizer, r["answer"], r["question"]) for r in rows]
    alone = score_answers(bundle.model, examples, bundle.tokenizer.pad_token_id, batch_size=1)
    expected = sum(tofu.answer_prob(s.token_logprobs) for s in alone) / len(alone)
    assert ctx.metric("forget_Q_A_Prob") == pytest.approx(expected, abs=1e-6)


def test_per_item_table_has_one_record_per_item_and_set(sets, retain_run):
    _, ctx, _ = retain_run
    records = item_table(ctx)
    forget = [r for r in records if r["set"] == "forget"]
    assert len(forget) == len(sets["forget"])
    assert {"question", "answer", "generation", "Q_A_Prob", "Q_A_ROUGE", "truth_ratio", "mia_min_k"} <= set(forget[0])
    assert any(r["set"] == "forget_passages" and "continuation" in r for r in records)


def test_another_model_is_compared_with_the_pinned_reference(bundle, sets, retain_run):
    _, _, reference = retain_run
    summary, _ = evaluate_model(
        bundle, sets, ["forget_quality", "privleak", "forget_Q_A_Prob"], FAST, reference=reference
    )
    # The same model against its own reference: indistinguishable.
    assert summary["forget_quality"] == pytest.approx(1.0)
    assert summary["privleak"] == pytest.approx(0.0, abs=1e-6)


def test_reference_from_another_split_or_tokenizer_is_refused(bundle, retain_run):
    _, _, reference = retain_run
    fingerprint = tokenizer_fingerprint(bundle.tokenizer)
    reference.check("forget10", fingerprint, 40)
    with pytest.raises(ValueError, match="forget split 'forget10', this evaluation uses 'forget05'"):
        reference.check("forget05", fingerprint, 40)
    with pytest.raises(ValueError, match="tokenizer"):
        reference.check("forget10", "0123456789abcdef", 40)
    with pytest.raises(ValueError, match="40 forget items, this evaluation has 20"):
        RetainReference(**{**reference.__dict__}).check("forget10", fingerprint, 20)


def test_unknown_metric_or_missing_set_fails_before_any_model_work(sets):
    with pytest.raises(ValueError, match=r"unknown metric\(s\) \['forget_qualty'\]"):
        check_metrics(["forget_qualty"], sets)
    without_passages = {k: v for k, v in sets.items() if "passages" not in k}
    with pytest.raises(ValueError, match=r"'forget_verbmem_ROUGE' needs the evaluation set\(s\) \['forget_passages'\]"):
        check_metrics(["forget_verbmem_ROUGE"], without_passages)
    with pytest.raises(ValueError, match="unknown key"):
        EvaluateConfig.from_params({"max_new_token": 3})
