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
    completion_rows,
    evaluate_model,
    evaluate_retain_model,
    evaluation_sets,
    item_table,
    tokenizer_fingerprint,
)
from flat_pipeline.metrics import tofu
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat, encode_example, format_prompt
from flat_pipeline.scoring import score_answers

FAST = EvaluateConfig(max_new_tokens=12, completion_prompt_words=10, completion_max_new_tokens=12, knowmem_items=5)
TEMPLATES = ["I don't know.", "I have no idea who that is."]


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


ROLES = {
    "retain": "retain_perturbed",
    "ra": "real_authors_perturbed",
    "wf": "world_facts_perturbed",
    "completion": "passages",
    "perplexity": "passages",
    "forget_knowmem_shots": "real_authors_perturbed",
    "retain_knowmem_shots": "real_authors_perturbed",
}


@pytest.fixture(scope="module")
def benchmark(small_world):
    return {name: Dataset.from_list(rows) for name, rows in small_world.items()}


@pytest.fixture(scope="module")
def sets(benchmark):
    return evaluation_sets(benchmark, ROLES, benchmark["forget10_perturbed"], benchmark["holdout10"], 10)


@pytest.fixture(scope="module")
def retain_run(bundle, sets):
    return evaluate_retain_model(bundle, sets, list(METRICS), FAST, forget_split="forget10", templates=TEMPLATES)


def test_evaluation_sets_hold_every_role_and_the_passages_of_forget_and_holdout_authors(sets, small_world):
    assert set(sets) == {
        *("forget", "retain", "ra", "wf", "holdout", "forget_completion", "holdout_text"),
        *("forget_knowmem", "retain_knowmem", "forget_knowmem_shots", "retain_knowmem_shots"),
    }
    assert sets["forget_knowmem"] is sets["forget"] and sets["retain_knowmem"] is sets["retain"]
    forget_authors = {r["author"] for r in small_world["forget10"]}
    forget_passages = [p for p in small_world["passages"] if p["author"] in forget_authors]
    assert len(sets["forget_completion"]) == len(forget_passages)
    prompt, reference = sets["forget_completion"][0]["prompt"], sets["forget_completion"][0]["reference"]
    assert f"{prompt} {reference}" == forget_passages[0]["text"] and len(prompt.split()) == 10
    assert set(sets["holdout_text"]["author"]) == {r["author"] for r in small_world["holdout10"]}


def test_completion_sets_read_hp_and_muse_fields_as_given():
    hp = Dataset.from_list([{"prompt": "Go on: Harry looked", "response": "at the door."}])
    muse = Dataset.from_list([{"prompt": "The minister said", "gt": "on Tuesday that"}])
    assert completion_rows(hp, 3)[0] == {"prompt": "Go on: Harry looked", "reference": "at the door."}
    assert completion_rows(muse, 3)[0] == {"prompt": "The minister said", "reference": "on Tuesday that"}
    with pytest.raises(ValueError, match="expected prompt/response, prompt/gt or text"):
        completion_rows(Dataset.from_list([{"question": "q", "answer": "a"}]), 3)


def test_raw_text_sets_are_scored_whole_for_the_membership_attacks(bundle, benchmark):
    forget, holdout = benchmark["passages"].select(range(4)), benchmark["passages"].select(range(4, 8))
    sets = evaluation_sets(
        {"forget_texts": forget, "holdout_texts": holdout},
        {"forget": "forget_texts", "holdout": "holdout_texts"},
        benchmark["forget10_perturbed"],
        benchmark["holdout10"],
        10,
    )
    summary, ctx = evaluate_model(bundle, sets, ["mia_loss", "mia_min_k", "extraction_strength"], FAST)
    examples = [encode_example(bundle.tokenizer, text) for text in forget["text"]]
    alone = score_answers(bundle.model, examples, bundle.tokenizer.pad_token_id, batch_size=1)
    expected = [-sum(s.token_logprobs) / len(s.token_logprobs) for s in alone]
    assert ctx.items["forget"]["mia_loss"] == pytest.approx(expected, abs=1e-5)
    assert ctx.items["forget"]["text"] == forget["text"]
    assert 0 <= summary["mia_loss"] <= 1 and 0 <= summary["extraction_strength"] <= 1


def test_every_registered_metric_is_computed_and_the_retain_model_is_its_own_reference(retain_run):
    summary, _, reference = retain_run
    assert set(summary) == {*METRICS, "log10_forget_quality", "es_em_skipped_items"}  # reported with their metrics
    assert summary["es_em_skipped_items"] == 0  # `separate` tokenization: every prompt is a token prefix
    assert summary["forget_quality"] == pytest.approx(1.0)
    assert summary["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert 0 <= summary["model_utility"] <= 1  # a random model answers no real-authors question: a zero component
    assert summary["holdout_perplexity"] > 1
    for name, value in summary.items():
        assert not math.isnan(value), name
    assert summary["forget_quality_gap"] == pytest.approx(0.0)
    assert reference.forget_split == "forget10" and len(reference.forget_truth_ratio) == 40
    assert set(reference.completion) == {"forget_copyright_BLEU", "forget_copyright_ROUGE"}


def test_the_reference_holds_only_what_the_requested_metrics_compare_with(bundle, sets):
    _, _, reference = evaluate_retain_model(bundle, sets, ["forget_copyright_BLEU"], FAST, forget_split="forget10")
    assert reference.forget_truth_ratio == [] and reference.mia_min_k is None and reference.completion == {}
    reference.check("forget10", tokenizer_fingerprint(bundle.tokenizer), 7)  # no truth ratios: no item count
    with pytest.raises(
        ValueError, match=r"holds no numbers for \['forget_quality', 'privleak', 'forget_quality_gap'\]"
    ):
        reference.check_holds(["forget_quality", "privleak", "forget_quality_gap", "forget_Q_A_Prob"])
    # a reference log (no tokenizer recorded) may lack the AUC: privleak then uses 0.5, as open-unlearning
    RetainReference("forget10", "log", None, [0.5], None).check_holds(["forget_quality", "privleak"])
    with pytest.raises(ValueError, match="forget_quality needs the retain model's per-item forget truth ratios"):
        evaluate_model(bundle, sets, ["forget_quality"], FAST, reference=reference)


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
    assert any(r["set"] == "forget_completion" and "continuation" in r for r in records)


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
    without_passages = {k: v for k, v in sets.items() if k != "forget_completion"}
    needs = r"'forget_verbmem_ROUGE' needs the evaluation set\(s\) \['forget_completion'\]"
    with pytest.raises(ValueError, match=needs):
        check_metrics(["forget_verbmem_ROUGE"], without_passages)
    with pytest.raises(
        ValueError, match=r"evaluate.settings.max_new_token: unknown key \(did you mean 'max_new_tokens'\?\)"
    ):
        EvaluateConfig.from_params({"max_new_token": 3})


def test_extraction_metrics_leave_out_items_whose_prompt_is_not_a_token_prefix(bundle, benchmark):
    """`whole` tokenization with the space in the prompt: our GPT-2-style BPE merges that space with the answer's first
    word, so the prompt tokenised alone is not a token prefix and the labels start one token late. ES and EM leave
    those items out; the item table says which, the summary how many. An answer that starts with a space of its own
    keeps the prompt's space a token apart: those items are aligned and counted."""
    prompt = PromptFormat(boundary="prompt", tokenization="whole")
    rows = benchmark["forget10_perturbed"].select(range(6))
    answers = [f" {a}" if i in (1, 4) else a for i, a in enumerate(rows["answer"])]
    rows = rows.remove_columns("answer").add_column("answer", answers)
    tokenizer = bundle.tokenizer
    aligned = []
    for question, answer in zip(rows["question"], answers, strict=True):
        alone = tokenizer(format_prompt(question, prompt))["input_ids"]
        aligned.append(tokenizer(format_prompt(question, prompt) + answer)["input_ids"][: len(alone)] == alone)
    assert aligned[1] and aligned[4] and aligned.count(False) >= 2
    names = ["extraction_strength", "exact_memorization", "forget_Q_A_Prob"]
    summary, ctx = evaluate_model(bundle, {"forget": rows}, names, FAST, prompt=prompt)
    forget = [r for r in item_table(ctx) if r["set"] == "forget"]
    assert [r["es_em_skipped"] for r in forget] == [not a for a in aligned]
    assert summary["es_em_skipped_items"] == aligned.count(False)
    for name in ("extraction_strength", "exact_memorization"):
        assert [r[name] is None for r in forget] == [not a for a in aligned]
        kept = [r[name] for r in forget if r[name] is not None]
        assert summary[name] == pytest.approx(sum(kept) / len(kept))
    # every item is still scored for the other metrics
    assert all(r["Q_A_Prob"] is not None for r in forget)


def test_forget_quality_is_summarised_on_a_log10_scale_too(bundle, sets, retain_run):
    """forget_quality spans 1e-120 to 1, which a linear chart shows as 0.00: its log10 is reported beside it."""
    _, _, reference = retain_run
    summary, _ = evaluate_model(bundle, sets, ["forget_quality"], FAST, reference=reference)
    assert set(summary) == {"forget_quality", "log10_forget_quality"}
    assert summary["log10_forget_quality"] == pytest.approx(math.log10(summary["forget_quality"]))


def test_a_metric_that_overflows_is_reported_as_infinite_with_its_name(tiny_model_dir, sets, caplog):
    """A diverged model (its output layer scaled up: a mean token NLL in the thousands) has a perplexity beyond
    float range: reported as inf and named, not a bare OverflowError (issue 25)."""
    import logging

    import torch

    diverged = load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        diverged.model.lm_head.weight.mul_(1e4)
    with caplog.at_level(logging.WARNING, logger="flat_pipeline.evaluation.runner"):
        summary, _ = evaluate_model(diverged, sets, ["holdout_perplexity", "forget_Q_A_Prob"], FAST)
    assert summary["holdout_perplexity"] == math.inf
    assert math.isfinite(summary["forget_Q_A_Prob"])
    assert "holdout_perplexity overflowed (math range error): reported as inf" in caplog.messages
