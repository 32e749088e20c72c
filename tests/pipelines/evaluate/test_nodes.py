"""evaluate pipeline nodes: set selection and its checks, which run before any model is loaded, and the figure."""

from __future__ import annotations

import logging

import pytest
from datasets import Dataset, DatasetDict

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.pipelines.evaluate.nodes import build_evaluation_sets, compare_models, evaluate, template_pool

SETS = {
    "retain": "retain_perturbed",
    "ra": "real_authors_perturbed",
    "wf": "world_facts_perturbed",
    "completion": "passages",
    "perplexity": "passages",
    "forget_knowmem_shots": "real_authors_perturbed",
}


@pytest.fixture(scope="module")
def benchmark(small_world):
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in small_world.items()})


def params(metrics, **sets):
    return {"sets": {**SETS, **sets}, "metrics": metrics, "settings": {}}


def test_sets_by_role(benchmark):
    sets = build_evaluation_sets(
        benchmark, benchmark["forget10_perturbed"], benchmark["holdout10"], params(["forget_quality"])
    )
    assert {name: len(rows) for name, rows in sets.items()} == {
        "forget": 40,
        "holdout": 40,
        "retain": 40,
        "ra": 100,
        "wf": 120,
        "forget_completion": 2,
        "holdout_text": 2,
        "forget_knowmem": 40,
        "retain_knowmem": 40,
        "forget_knowmem_shots": 100,
    }


def test_unknown_split_name_is_an_error_naming_the_parameter(benchmark):
    with pytest.raises(ValueError, match=r"parameter evaluate.sets: split\(s\) \['retain_perturbd'\] not in"):
        build_evaluation_sets(
            benchmark,
            benchmark["forget10_perturbed"],
            benchmark["holdout10"],
            params(["forget_quality"], retain="retain_perturbd"),
        )


def test_perplexity_needs_holdout_authors_to_tell_which_passages_were_never_trained_on(benchmark):
    no_holdout = Dataset.from_dict({"question": [], "answer": []})
    with pytest.raises(ValueError, match=r"'holdout_perplexity' needs the evaluation set\(s\) \['holdout_text'\]"):
        build_evaluation_sets(benchmark, benchmark["forget10_perturbed"], no_holdout, params(["holdout_perplexity"]))


def test_unknown_role_is_an_error_naming_the_parameter(benchmark):
    with pytest.raises(ValueError, match=r"parameter evaluate.sets: unknown role\(s\) \['completon'\]"):
        build_evaluation_sets(
            benchmark,
            benchmark["forget10_perturbed"],
            benchmark["holdout10"],
            params(["forget_quality"], completon="passages"),
        )


def test_a_metric_whose_set_the_source_lacks_is_refused(benchmark):
    with pytest.raises(ValueError, match="'forget_verbmem_ROUGE' needs the evaluation set"):
        build_evaluation_sets(
            benchmark,
            benchmark["forget10_perturbed"],
            benchmark["holdout10"],
            params(["forget_verbmem_ROUGE"], completion=None),
        )


def test_template_pool_and_comparison_figure():
    templates = Dataset.from_dict({"template_answers": [["I don't know.", "No idea."], ["No idea."]]})
    assert template_pool(templates) == ["I don't know.", "No idea."]
    summaries = {
        f"{role}_evaluation_summary": {"metrics": {"forget_quality": q, "model_utility": 0.5}}
        for role, q in (("original", 1e-10), ("retain", 1.0), ("unlearned", 0.01))
    }
    figure, same = compare_models(**summaries)
    assert figure is same
    assert [ax.get_title() for ax in figure.axes] == ["forget_quality", "model_utility"]
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["original", "retain", "unlearned"]


def test_a_model_is_evaluated_without_a_retain_reference_leaving_out_what_compares_with_it(
    benchmark, tiny_model_dir, caplog
):
    """evaluate_original before any retain model was evaluated: every metric but those comparing with the retain
    model, and a warning naming those left out."""
    metrics = ["forget_quality", "forget_Q_A_Prob", "mia_min_k", "privleak", "forget_truth_ratio"]
    evaluate_params = {**params(metrics), "settings": {"max_items": 8}}
    sets = build_evaluation_sets(benchmark, benchmark["forget10_perturbed"], benchmark["holdout10"], evaluate_params)
    model = load_causal_lm(str(tiny_model_dir))
    with caplog.at_level(logging.WARNING):
        report, items, mlflow_metrics = evaluate(
            model, sets, [], None, {}, {"forget_split": "forget10"}, evaluate_params
        )
    assert set(report["metrics"]) == {"forget_Q_A_Prob", "mia_min_k", "forget_truth_ratio"}
    assert set(mlflow_metrics) == set(report["metrics"])
    assert report["retain_reference"] is None
    assert len(items[items["set"] == "forget"]) == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no retain reference" in w and "['forget_quality', 'privleak']" in w for w in warnings), warnings
