"""The selection rule and the tuned leaderboard on trial records as the storage returns them."""

from __future__ import annotations

import math
import re

import pytest

from flat_pipeline.config import ParameterError
from flat_pipeline.tuning import SelectionRule, TuneConfig
from flat_pipeline.tuning.report import tradeoff_figure, tuned_markdown, tuned_table

ORIGINAL = {"forget_quality": 1e-20, "model_utility": 0.80}
RETAIN = {"forget_quality": 1.0, "model_utility": 0.82}
COLUMNS = ["forget_quality", "model_utility"]


def trial(number, fq, mu, **drawn):
    return {"number": number, "state": "COMPLETE", "drawn": drawn or {"learning_rate": 1e-3 * (number + 1)},
            "metrics": {"forget_quality": fq, "model_utility": mu}, "worker": "w"}  # fmt: skip


def config(**overrides):
    return TuneConfig.from_params({"storage": "unused.journal", "n_trials": 4, "seeds": [1, 2, 3], **overrides})


def test_the_best_trial_meets_the_floor_then_maximises_the_objective_then_the_tie_break():
    rule, floor = SelectionRule(), 0.9 * ORIGINAL["model_utility"]  # 0.72
    trials = [
        trial(0, 0.9, 0.50),  # the highest forget_quality, far below the floor
        trial(1, 0.3, 0.75),
        trial(2, 0.3, 0.78),  # ties trial 1, higher utility
        trial(3, 0.1, 0.80),
    ]
    assert rule.best(trials, floor)["number"] == 2
    # no trial meets the floor: the one nearest to it, so the table can mark the method below the floor
    assert rule.best([trial(0, 0.9, 0.5), trial(1, 0.2, 0.6)], floor)["number"] == 1
    assert rule.best([], floor) is None


def test_minimising_and_the_pareto_front():
    rule = SelectionRule(objective="forget_quality", direction="minimize")
    assert rule.best([trial(0, 0.9, 0.8), trial(1, 0.2, 0.8)], 0.7)["number"] == 1
    front = SelectionRule(mode="pareto").pareto_front(
        [trial(0, 0.9, 0.5), trial(1, 0.3, 0.75), trial(2, 0.3, 0.70), trial(3, 0.1, 0.80)]
    )
    assert [t["number"] for t in front] == [0, 1, 3]  # trial 2 is beaten by trial 1 on both


def test_the_rule_is_the_same_for_every_method_and_the_seeds_spread_is_reported():
    """Two methods with the same trials in another order get the same pick, the same floor, the same budget; the
    cells are the seeds' mean and standard deviation."""
    search = [trial(0, 0.9, 0.5), trial(1, 0.3, 0.75), trial(2, 0.3, 0.78), trial(3, 0.1, 0.80)]
    seeds = [trial(0, 0.2, 0.76), trial(1, 0.4, 0.74), trial(2, 0.3, 0.78)]
    trials = {"flat_kl": {"search": search, "seed": seeds}, "npo": {"search": search[::-1], "seed": seeds[::-1]}}
    table = tuned_table(trials, config(), COLUMNS, ORIGINAL, RETAIN)
    rows = {row["method"]: row for _, row in table.iterrows()}
    assert rows["flat_kl"]["setting"] == rows["npo"]["setting"] == "learning_rate=0.003"  # trial 2 for both
    for method in ("flat_kl", "npo"):
        row = rows[method]
        assert (row["trials"], row["failed"], row["above_floor"], row["seeds"]) == (4, 0, 3, 3)
        # forget_quality, a p-value, is averaged on a log10 scale: log10 0.2, 0.4, 0.3 = -0.699, -0.398, -0.523
        assert row["log10_forget_quality"] == pytest.approx(-0.5400, abs=1e-4)
        assert row["log10_forget_quality_std"] == pytest.approx(0.1512, abs=1e-4)
        assert row["forget_quality"] == pytest.approx(10**-0.5400, rel=1e-3)  # their geometric mean
        assert math.isclose(row["model_utility_std"], 0.02)  # sample standard deviation of 0.76, 0.74, 0.78
        assert not row["below_floor"]
    assert list(table["method"][-2:]) == ["retain", "original"]  # reference rows last
    markdown = tuned_markdown(table, config(), COLUMNS, ORIGINAL, "world")
    assert "maximise forget_quality subject to model_utility >= 0.9 x the original model's (0.72)" in markdown
    assert "| flat_kl | learning_rate=0.003 | 4 | 0 | 3 | 0.288 (log10 -0.54 ± 0.15) | 0.760 ± 0.020 |" in markdown
    # the runs behind the rows, for `kedro reproduce`: the search trial picked (2 of flat_kl's and of npo's, listed
    # in reverse) and the seed re-runs, by number in their studies
    assert "Optuna studies `tune.<method>` (search) and `tune.<method>.seeds` (re-runs) in unused.journal" in markdown
    assert rows["flat_kl"]["from_trials"] == rows["npo"]["from_trials"] == "search 2; seeds 0, 1, 2"
    assert "| 0.760 ± 0.020 | search 2; seeds 0, 1, 2 |" in markdown
    assert rows["original"]["from_trials"] == ""


def test_forget_quality_of_the_seeds_is_averaged_on_a_log10_scale_in_the_table_and_the_figure():
    """p-values decades apart (1e-2, 1e-4, 1e-6): their arithmetic mean, 3.4e-3, is the largest one's third. The
    leaderboard and the trade-off figure average their log10 (-4 ± 2); a trial whose p-value underflowed to 0 is
    drawn, not lost at -inf."""
    search = [trial(0, 1e-3, 0.78), trial(1, 0.0, 0.79)]
    seeds = [trial(0, 1e-2, 0.76), trial(1, 1e-4, 0.74), trial(2, 1e-6, 0.78)]
    trials = {"npo": {"search": search, "seed": seeds}}
    table = tuned_table(trials, config(), COLUMNS, ORIGINAL, RETAIN)
    row = table[table["method"] == "npo"].iloc[0]
    assert row["log10_forget_quality"] == pytest.approx(-4.0)
    assert row["log10_forget_quality_std"] == pytest.approx(2.0)
    assert row["forget_quality"] == pytest.approx(1e-4)
    markdown = tuned_markdown(table, config(), COLUMNS, ORIGINAL, "world")
    assert "| 1.00e-04 (log10 -4.00 ± 2.00) | 0.760 ± 0.020 |" in markdown
    ax = tradeoff_figure(trials, table, config(), ORIGINAL, RETAIN).axes[0]
    assert ax.get_xlabel() == "log10 forget_quality" and ax.get_xscale() == "linear"
    (pick,) = [c for c in ax.collections if c.get_label() == "npo"]
    assert pick.get_offsets()[0][0] == pytest.approx(-4.0)
    drawn = [x for c in ax.collections for x, _ in c.get_offsets()]
    assert all(math.isfinite(x) for x in drawn) and min(drawn) == pytest.approx(-23.0)  # 3 decades below 1e-20


def test_a_method_below_the_floor_is_marked_and_ranked_after_those_above_it():
    trials = {
        "ga": {"search": [trial(0, 0.99, 0.1)], "seed": []},
        "npo": {"search": [trial(0, 0.01, 0.79)], "seed": []},
    }
    table = tuned_table(trials, config(), COLUMNS, ORIGINAL, RETAIN)
    assert list(table["method"][:2]) == ["npo", "ga"] and list(table["below_floor"][:2]) == [False, True]
    assert "| ga ▼ |" in tuned_markdown(table, config(), COLUMNS, ORIGINAL, "world")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"n_trials": 0}, "parameter tune.n_trials: expected an integer >= 1, got 0"),
        ({"seeds": [1, 1]}, "parameter tune.seeds: a seed is repeated in [1, 1]"),
        ({"rule": {"mode": "paretto"}}, "parameter tune.rule.mode: expected one of constrained, pareto, got 'paretto'"),
        ({"rule": {"floor_fraktion": 0.9}}, "parameter tune.rule.floor_fraktion: unknown key (did you mean"),
        ({"n_trail": 3}, "parameter tune.n_trail: unknown key (did you mean 'n_trials'?)"),
    ],
)
def test_bad_tune_settings_are_named(overrides, message):
    with pytest.raises(ParameterError, match="^" + re.escape(message)):
        config(**overrides)
