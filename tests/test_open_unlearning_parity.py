"""Golden parity with open-unlearning's TOFU evaluator (fixtures/open_unlearning_tiny, its README says how they were
made): two tiny models saved by transformers 4.45, TOFU-format files, and the numbers open-unlearning d3d7cf9 gives
for them. Evaluated through our data_prep and evaluate nodes with the phi-1_5 format encoded as open-unlearning
encodes it, every aggregate agrees within 1e-5 (Q_A_Prob aggregates 2e-5: the reference's batched float32 sits
6-8e-6 above a float64 recomputation), every per-item value we also compute within the same bounds, and every
greedy generation is identical. A per-item truth ratio far above 1 (13.13 for one item) carries float32 noise in
proportion, hence the relative 1e-5 beside the absolute bounds."""

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
