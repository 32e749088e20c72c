"""The leaderboard node: columns, order and scatter axes come from `benchmark.leaderboard`."""

from __future__ import annotations

import math

import pytest

from flat_pipeline.pipelines.benchmark.nodes import COLUMNS, leaderboard, method_parameters


def summary(**metrics):
    return {"metrics": metrics}


def test_tofu_defaults_sort_by_forget_quality_with_model_utility_breaking_ties():
    table, markdown, figure, *_ = leaderboard(
        {"title": "t"},
        original_evaluation_summary=summary(forget_quality=1e-20, model_utility=0.9),
        retain_evaluation_summary=summary(forget_quality=1.0, model_utility=0.8),
        **{
            "a.evaluation_summary": summary(forget_quality=1e-5, model_utility=0.5),
            "b.evaluation_summary": summary(forget_quality=1e-5, model_utility=0.7),
            "c.evaluation_summary": summary(forget_quality=1e-2, model_utility=0.1),
        },
    )
    assert list(table["method"]) == ["retain", "original", "c", "b", "a"]
    assert list(table.columns[1 : 1 + len(COLUMNS)]) == COLUMNS
    assert "Sorted by forget_quality, higher first." in markdown
    assert figure.axes[0].get_xlabel() == "forget_quality (log)"


def test_muse_leaderboard_shows_its_own_suite_lowest_verbmem_first():
    board = {
        "columns": ["forget_verbmem_ROUGE", "retain_knowmem_ROUGE", "privleak"],
        "sort_by": "forget_verbmem_ROUGE",
        "descending": False,
        "scatter": ["forget_verbmem_ROUGE", "retain_knowmem_ROUGE"],
    }
    table, markdown, figure, *_ = leaderboard(
        {"title": "MUSE", "leaderboard": board},
        original_evaluation_summary=summary(forget_verbmem_ROUGE=0.9, retain_knowmem_ROUGE=0.5, privleak=-99.0),
        retain_evaluation_summary=summary(forget_verbmem_ROUGE=0.2, retain_knowmem_ROUGE=0.5, privleak=0.0),
        **{
            "npo.evaluation_summary": summary(forget_verbmem_ROUGE=0.3, retain_knowmem_ROUGE=0.4),
            "flat_kl.evaluation_summary": summary(forget_verbmem_ROUGE=0.1, retain_knowmem_ROUGE=0.45),
        },
    )
    assert list(table["method"]) == ["retain", "original", "flat_kl", "npo"]
    assert "forget_quality" not in table.columns and math.isnan(table.loc[3, "privleak"])
    assert "| method | forget_verbmem_ROUGE | retain_knowmem_ROUGE | privleak |" in markdown
    assert "Sorted by forget_verbmem_ROUGE, lower first." in markdown
    assert [figure.axes[0].get_xlabel(), figure.axes[0].get_ylabel()] == board["scatter"]
    assert figure.axes[0].get_xscale() == "linear"


def test_a_sort_column_outside_the_columns_is_refused_with_how_to_rerun():
    with pytest.raises(ValueError, match="benchmark.leaderboard.sort_by: 'privleak'.*--nodes leaderboard_node"):
        leaderboard(
            {"leaderboard": {"columns": ["forget_verbmem_ROUGE"], "sort_by": "privleak"}},
            original_evaluation_summary=summary(forget_verbmem_ROUGE=0.9),
        )


def test_the_benchmarks_trajectory_is_set_key_by_key_over_unlearns_and_a_methods_own_replaces_both():
    unlearn = {"learning_rate": 3e-4, "trajectory": {"every": None, "metrics": ["mia_min_k"], "max_items": 50}}
    on = {"every": "epoch", "metrics": ["forget_quality"]}
    merged = method_parameters(unlearn, {"method": "npo"}, on, "npo")
    assert merged["trajectory"] == {"every": "epoch", "metrics": ["forget_quality"], "max_items": 50}
    assert unlearn["trajectory"]["every"] is None  # unlearn's own block is left as it was
    assert method_parameters(unlearn, {"method": "npo"}, None, "npo")["trajectory"] == unlearn["trajectory"]
    own = {"every": 3, "metrics": ["forget_truth_ratio"]}
    assert method_parameters(unlearn, {"method": "ga", "trajectory": own}, on, "ga")["trajectory"] == own
