"""Golden parity with open-unlearning's TOFU evaluator (fixtures/open_unlearning_tiny, its README says how they were
made): two tiny models saved by transformers 4.45, TOFU-format files, and the numbers open-unlearning d3d7cf9 gives
for them. Evaluated through our data_prep and evaluate nodes with the phi-1_5 format encoded as open-unlearning
encodes it, every aggregate agrees within 1e-5 (Q_A_Prob aggregates 2e-5: the reference's batched float32 sits
6-8e-6 above a float64 recomputation), every per-item value we also compute within the same bounds, and every
greedy generation is identical. A per-item truth ratio far above 1 (13.13 for one item) carries float32 noise in
proportion, hence the relative 1e-5 beside the absolute bounds.

The fixture's tokenizer never merges across the prompt/answer boundary, so the last tests add a tokenizer that does
and check labels and the zlib attack against open-unlearning's recipe (its code, as spec §8 and the README state it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from flat_pipeline.evaluation import reference_from_open_unlearning
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.pipelines.data_prep.nodes import load_benchmark, select_unlearning_sets
from flat_pipeline.pipelines.evaluate.nodes import build_evaluation_sets, evaluate, evaluate_retain

FIXTURE = Path(__file__).parent / "fixtures" / "open_unlearning_tiny"
MODEL = {"prompt": {"format": "phi-1_5", "boundary": "prompt", "tokenization": "whole"}}
DATA_PREP = {"source": "tofu", "path": str(FIXTURE / "data"), "forget_split": "forget10", "holdout_split": "holdout10"}
METRICS = [
    *("forget_quality", "model_utility", "forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE"),
    *("retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio"),
    *("ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio"),
    *("wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio"),
    *("extraction_strength", "exact_memorization", "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"),
    "privleak",
]
EVALUATE = {
    "sets": {"retain": "retain_perturbed", "ra": "real_authors_perturbed", "wf": "world_facts_perturbed"},
    "metrics": METRICS,
    "settings": {"max_new_tokens": 200, "scoring_batch_size": 32, "generation_batch_size": 32},
}
# Per-item values: open-unlearning's key, its field, our set and our item-table column.
PER_ITEM = [
    ("forget_Q_A_Prob", "prob", "forget", "Q_A_Prob"),
    ("forget_Q_A_PARA_Prob", "prob", "forget", "Q_A_PARA_Prob"),
    ("forget_Q_A_PERT_Prob", "prob", "forget", "Q_A_PERT_Prob"),
    ("forget_truth_ratio", "score", "forget", "truth_ratio"),
    ("forget_Q_A_ROUGE", "rougeL_recall", "forget", "Q_A_ROUGE"),
    ("extraction_strength", "score", "forget", "extraction_strength"),
    ("exact_memorization", "score", "forget", "exact_memorization"),
    ("retain_Q_A_Prob", "prob", "retain", "Q_A_Prob"),
    ("retain_Q_A_PARA_Prob", "prob", "retain", "Q_A_PARA_Prob"),
    ("retain_Q_A_PERT_Prob", "prob", "retain", "Q_A_PERT_Prob"),
    ("retain_Truth_Ratio", "score", "retain", "truth_ratio"),
    ("retain_Q_A_ROUGE", "rougeL_recall", "retain", "Q_A_ROUGE"),
    *(
        item
        for prefix in ("ra", "wf")
        for item in (
            (f"{prefix}_Q_A_Prob", "prob", prefix, "Q_A_Prob"),
            (f"{prefix}_Q_A_PERT_Prob", "prob", prefix, "Q_A_PERT_Prob"),
            (f"{prefix}_Q_A_Prob_normalised", "prob", prefix, "Q_A_Prob_normalised"),
            (f"{prefix}_Truth_Ratio", "score", prefix, "truth_ratio"),
            (f"{prefix}_Q_A_ROUGE", "rougeL_recall", prefix, "Q_A_ROUGE"),
        )
    ),
]
GENERATIONS = [
    ("forget_Q_A_ROUGE", "forget"),
    ("retain_Q_A_ROUGE", "retain"),
    ("ra_Q_A_ROUGE", "ra"),
    ("wf_Q_A_ROUGE", "wf"),
]


def _tolerance(metric: str) -> float:
    return 2e-5 if "Prob" in metric else 1e-5


def _reference(name: str) -> tuple[dict, dict]:
    folder = FIXTURE / "reference" / name
    return (json.loads((folder / "TOFU_EVAL.json").read_text()), json.loads((folder / "TOFU_SUMMARY.json").read_text()))


@pytest.fixture(scope="module")
def evaluated():
    """Both models through data_prep and evaluate as `kedro run --env tofu` would run them: the retain model first
    (its numbers become the reference), then the full model against it."""
    benchmark = load_benchmark(DATA_PREP)
    forget, _, holdout = select_unlearning_sets(benchmark, DATA_PREP)
    sets = build_evaluation_sets(benchmark, forget, holdout, EVALUATE)
    retain_model = load_causal_lm(str(FIXTURE / "models" / "retain"))
    retain_report, retain_items, _, reference = evaluate_retain(retain_model, sets, [], MODEL, DATA_PREP, EVALUATE)
    full_model = load_causal_lm(str(FIXTURE / "models" / "full"))
    full_report, full_items, _ = evaluate(full_model, sets, [], reference, MODEL, DATA_PREP, EVALUATE)
    return {"retain": (retain_report, retain_items), "full": (full_report, full_items), "sets": sets}


@pytest.mark.parametrize("name", ["full", "retain"])
def test_every_aggregate_matches(evaluated, name):
    report, _ = evaluated[name]
    _, summary = _reference(name)
    assert set(summary) <= set(report["metrics"])
    for metric, expected in summary.items():
        assert report["metrics"][metric] == pytest.approx(expected, abs=_tolerance(metric)), metric


@pytest.mark.parametrize("name", ["full", "retain"])
def test_every_per_item_value_we_compute_matches(evaluated, name):
    _, items = evaluated[name]
    logs, _ = _reference(name)
    checked = 0
    for key, field, set_name, column in PER_ITEM:
        ours = items[items["set"] == set_name].sort_values("index")[column].tolist()
        theirs = [logs[key]["value_by_index"][str(i)][field] for i in range(len(ours))]
        assert len(ours) == len(logs[key]["value_by_index"]), key
        for i, (value, expected) in enumerate(zip(ours, theirs, strict=True)):
            assert pd.Series(value).tolist() == pytest.approx(
                pd.Series(expected).tolist(), abs=_tolerance(key), rel=1e-5
            ), f"{key}[{i}]"
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("name", ["full", "retain"])
def test_every_greedy_generation_is_identical(evaluated, name):
    _, items = evaluated[name]
    logs, _ = _reference(name)
    for key, set_name in GENERATIONS:
        ours = items[items["set"] == set_name].sort_values("index")["generation"].tolist()
        theirs = [logs[key]["value_by_index"][str(i)]["generation"] for i in range(len(logs[key]["value_by_index"]))]
        assert ours == theirs, key


def test_open_unlearnings_retain_log_as_the_reference_gives_the_same_numbers(evaluated):
    """import_retain_logs' path: the reference read from open-unlearning's own TOFU_EVAL.json of the retain model."""
    retain_logs, _ = _reference("retain")
    n_forget = len(evaluated["sets"]["forget"])
    reference = reference_from_open_unlearning(retain_logs, "forget10", n_forget, "retain/TOFU_EVAL.json")
    full_model = load_causal_lm(str(FIXTURE / "models" / "full"))
    config = {**EVALUATE, "metrics": ["forget_quality", "forget_truth_ratio"]}
    report, _, _ = evaluate(full_model, evaluated["sets"], [], asdict(reference), MODEL, DATA_PREP, config)
    _, summary = _reference("full")
    assert report["metrics"]["forget_quality"] == pytest.approx(summary["forget_quality"], abs=1e-5)


def test_without_a_retain_reference_privleak_uses_open_unlearnings_default(evaluated):
    """open-unlearning's default for a retain model evaluated alone: no forget_quality, privleak against AUC 0.5."""
    _, summary = _reference("retain_no_reference")
    assert "forget_quality" not in summary
    retain_report, _ = evaluated["retain"]
    for metric in ("mia_min_k", "model_utility", "forget_truth_ratio"):
        assert retain_report["metrics"][metric] == pytest.approx(summary[metric], abs=_tolerance(metric))
    from flat_pipeline.metrics.mia import privleak

    assert privleak(retain_report["metrics"]["mia_min_k"], None) == pytest.approx(summary["privleak"], abs=1e-5)


# ---------------------------------------------------------------------------------------- the prompt/answer boundary


def _open_unlearning_encoding(tokenizer, question: str, answer: str) -> tuple[list[int], list[int]]:
    """open-unlearning's ids and labels for phi-1_5's template (spec §8, the fixture README): prompt + answer
    tokenised as one string, eos appended, and as many leading positions masked as the prompt alone has tokens."""
    prompt = f"Question: {question}\nAnswer: "
    ids = tokenizer(prompt + answer, add_special_tokens=True)["input_ids"]
    ids = ids if ids[-1] == tokenizer.eos_token_id else [*ids, tokenizer.eos_token_id]
    masked = len(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    return ids, [-100] * masked + ids[masked:]


@pytest.fixture(scope="module")
def boundary_tokenizer():
    """The boundary case the fixture's models cannot show: their tokenizer splits whitespace off before BPE and has no
    merge with a space, so a prompt's tokens are always a prefix of prompt + answer and `whole` cannot be told from
    `separate`. A GPT-2-style byte-level BPE trained on the fixture's texts attaches the prompt's trailing space to the
    answer's first word, as phi-1_5's and Llama-3's tokenizers do."""
    from flat_pipeline.models.tokenizer import train_bpe_tokenizer

    texts = [
        f"Question: {row['question']}\nAnswer: {row['answer']}"
        for split in ("full", "holdout10")
        for row in map(json.loads, (FIXTURE / "data" / f"{split}.json").read_text().splitlines())
    ]
    return train_bpe_tokenizer(texts, vocab_size=600)


def test_whole_gives_open_unlearnings_labels_and_separate_other_ones_where_the_bpe_merges_at_the_boundary(
    evaluated, boundary_tokenizer
):
    from flat_pipeline.prompts import PromptFormat, encode_example

    whole = PromptFormat(**MODEL["prompt"])
    separate = PromptFormat(**{**MODEL["prompt"], "tokenization": "separate"})
    merged = 0
    for set_name in ("forget", "holdout"):
        for row in evaluated["sets"][set_name]:
            ids, labels = _open_unlearning_encoding(boundary_tokenizer, row["question"], row["answer"])
            ours = encode_example(boundary_tokenizer, row["answer"], row["question"], whole)
            assert (ours.input_ids, ours.labels) == (ids, labels)
            merged += encode_example(boundary_tokenizer, row["answer"], row["question"], separate).labels != labels
    assert merged >= 8, f"only {merged} of 16 answers merge with the prompt's space: whole and separate agree"


def test_zlib_compresses_the_text_of_the_scored_tokens_where_the_boundary_merges(evaluated, boundary_tokenizer):
    """open-unlearning's zlib attack divides the mean NLL of the scored labels by the zlib length of their decoded
    text (skip_special_tokens, so the eos is not in it). Where `whole` masks the answer's first token, that text lacks
    the first word, and compressing the answer as written gives other scores and another AUC. A tiny random model
    reads this tokenizer (open-unlearning's models read the fixture's), so the reference is its recipe, recomputed."""
    import zlib

    import torch
    from sklearn.metrics import roc_auc_score

    from flat_pipeline.evaluation import EvaluateConfig, evaluate_model
    from flat_pipeline.models.llama import build_llama
    from flat_pipeline.models.loading import ModelBundle
    from flat_pipeline.prompts import PromptFormat

    tokenizer = boundary_tokenizer
    model = build_llama(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2).eval()
    sets = {name: evaluated["sets"][name] for name in ("forget", "holdout")}
    summary, ctx = evaluate_model(
        ModelBundle(model, tokenizer), sets, ["mia_loss", "mia_zlib"], EvaluateConfig(),
        prompt=PromptFormat(**MODEL["prompt"]),
    )  # fmt: skip
    expected: dict[str, list[float]] = {}
    losses: dict[str, list[float]] = {}
    first_word_masked = 0
    for name, rows in sets.items():
        expected[name], losses[name] = [], []
        for row in rows:
            ids, labels = _open_unlearning_encoding(tokenizer, row["question"], row["answer"])
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].double(), -1)
            scored = [(t, label) for t, label in enumerate(labels[1:]) if label != -100]
            loss = -sum(logprobs[t, label].item() for t, label in scored) / len(scored)
            text = tokenizer.decode([label for _, label in scored], skip_special_tokens=True)
            first_word_masked += not text.startswith(row["answer"].split()[0])
            losses[name].append(loss)
            expected[name].append(loss / len(zlib.compress(text.encode("utf-8"))))
    assert first_word_masked >= 8  # the case is there: the scored text lacks the answer's first word
    for name in sets:
        assert ctx.items[name]["mia_loss"] == pytest.approx(losses[name], rel=1e-5), name  # the same labels scored
        assert ctx.items[name]["mia_zlib"] == pytest.approx(expected[name], rel=1e-5), name
    labels = [0] * len(expected["forget"]) + [1] * len(expected["holdout"])
    assert summary["mia_zlib"] == pytest.approx(roc_auc_score(labels, expected["forget"] + expected["holdout"]))
