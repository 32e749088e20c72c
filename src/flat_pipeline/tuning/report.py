"""The tuned leaderboard, assembled from the Optuna storage whichever workers filled it: each method's best setting
by the rule, its seed re-runs' mean and spread per metric, and the trade-off figure of every trial."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from flat_pipeline.metrics.tofu import log10_forget_quality
from flat_pipeline.tuning.study import SEARCH, SEEDS, TuneConfig, open_storage, redacted, study_name, trial_records

# Columns that are p-values spanning decades (forget_quality: 1e-120 to 1), and their log10: seeds are averaged and
# charted on that scale, where an arithmetic mean would be the largest seed's share of it.
LOG10_COLUMNS = {"forget_quality": log10_forget_quality}


def collect(config: TuneConfig, methods: Sequence[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Every method's search and seed trials from the storage: `{method: {"search": [...], "seed": [...]}}`."""
    storage = open_storage(config.storage)
    return {
        method: {
            SEARCH: trial_records(storage, study_name(config, method, SEARCH), config.n_trials),
            SEEDS: trial_records(storage, study_name(config, method, SEEDS), len(config.seeds)),
        }
        for method in methods
    }


def _spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite values; NaN for none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return float(np.mean(finite)), float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0


def tuned_table(
    trials: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    config: TuneConfig,
    columns: Sequence[str],
    original: Mapping[str, float],
    retain: Mapping[str, float],
) -> pd.DataFrame:
    """One row per method (pareto: per front point) and the original and retain models as reference rows.

    `<metric>` holds the mean over the seed re-runs of the best setting (the search trial itself when no seed ran)
    and `<metric>_std` their standard deviation; `seeds` how many re-runs the mean is over. forget_quality's mean and
    standard deviation are of its log10 (`log10_forget_quality`, `log10_forget_quality_std`), and `forget_quality` is
    10 to that mean (the seeds' geometric mean). Sorted by the rule.
    """
    rule = config.selection
    floor = rule.floor(original) if rule.mode == "constrained" else -math.inf
    rows = []
    for method, phases in trials.items():
        search = [t for t in phases[SEARCH] if t["state"] == "COMPLETE"]
        counts = {
            "trials": len(phases[SEARCH]),
            "failed": sum(t["state"] == "FAIL" for t in phases[SEARCH]),
            "above_floor": sum(rule.feasible(t["metrics"], floor) for t in search),
        }
        if rule.mode == "pareto":
            for point in rule.pareto_front(search):
                rows.append({"method": method, "kind": "front", "setting": _setting(point["drawn"]), "seeds": 0,
                             "from_trials": f"search {point['number']}", **counts,
                             **_metric_cells([point["metrics"]], columns)})  # fmt: skip
            continue
        best = rule.best(search, floor)
        if best is None:
            rows.append({"method": method, "kind": "unlearned", "setting": "no finished trial", "seeds": 0,
                         "from_trials": "", **counts, **_metric_cells([], columns)})  # fmt: skip
            continue
        seeds = [t for t in phases[SEEDS] if t["state"] == "COMPLETE"]
        row = {"method": method, "kind": "unlearned", "setting": _setting(best["drawn"]), "seeds": len(seeds),
               "from_trials": _from_trials(best, seeds), **counts}  # fmt: skip
        rows.append({**row, **_metric_cells([t["metrics"] for t in seeds] or [best["metrics"]], columns)})
    for name, metrics in (("original", original), ("retain", retain)):
        rows.append({"method": name, "kind": "reference", "setting": "", "seeds": 0, "from_trials": "", "trials": 0,
                     "failed": 0, "above_floor": 0, **_metric_cells([metrics], columns)})  # fmt: skip
    table = pd.DataFrame(rows)
    table["below_floor"] = [
        kind != "reference" and not rule.feasible({rule.floor_metric: value}, floor)
        for kind, value in zip(table["kind"], table.get(rule.floor_metric, [math.nan] * len(table)), strict=True)
    ]
    order = sorted(
        range(len(table)),
        key=lambda i: (table["kind"][i] == "reference", *rule.rank_key(table.iloc[i].to_dict(), floor)),
    )
    return table.iloc[order].reset_index(drop=True)


def _from_trials(best: Mapping[str, Any], seeds: Sequence[Mapping[str, Any]]) -> str:
    """The trials behind a row, by number in their studies: the search trial picked, then its seed re-runs."""
    numbers = ", ".join(str(n) for n in sorted(t["number"] for t in seeds))
    return f"search {best['number']}" + (f"; seeds {numbers}" if seeds else "")


def _metric_cells(runs: Sequence[Mapping[str, float]], columns: Sequence[str]) -> dict[str, float]:
    cells: dict[str, float] = {}
    for column in columns:
        values = [run.get(column, math.nan) for run in runs]
        if column in LOG10_COLUMNS:
            to_log10 = LOG10_COLUMNS[column]
            mean, std = _spread([to_log10(v) for v in values if v is not None])
            cells[f"log10_{column}"], cells[f"log10_{column}_std"] = mean, std
            cells[column], cells[f"{column}_std"] = 10**mean, math.nan  # the spread is the log10 column's
        else:
            cells[column], cells[f"{column}_std"] = _spread(values)
    return cells


def _setting(drawn: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in drawn.items() if k != "seed")


def _cell(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "–"
    shown = f"{mean:.2e}" if abs(mean) and (abs(mean) < 1e-3 or abs(mean) >= 1e4) else f"{mean:.3f}"
    if seeds > 1 and not math.isnan(std):
        shown += f" ± {std:.1e}" if abs(std) and abs(std) < 1e-3 else f" ± {std:.3f}"
    return shown


def _log10_cell(mean: float, std: float, seeds: int) -> str:
    """A p-value column: the geometric mean, and over seeds the mean ± standard deviation of log10."""
    if math.isnan(mean):
        return "–"
    shown = _cell(10**mean, math.nan, 1)
    if seeds > 1 and not math.isnan(std):
        shown += f" (log10 {mean:.2f} ± {std:.2f})"
    return shown


def tuned_markdown(
    table: pd.DataFrame, config: TuneConfig, columns: Sequence[str], original: Mapping[str, float], title: str
) -> str:
    """The leaderboard with its rule, budget and seeds stated above it."""
    rule = config.selection
    seeds = ", ".join(map(str, config.seeds))
    lines = [
        f"# {title}: every method tuned by one rule",
        "",
        f"- Rule: {rule.describe(original if rule.mode == 'constrained' else None)}.",
        f"- Budget: {config.n_trials} search trials per method (Optuna TPE, the same shared ranges for every method), "
        + ("the Pareto front of each method's trials (no seed re-runs)." if rule.mode == "pareto" else
           f"then the best setting re-run with unlearn.seed = {seeds} (data order, template pairing): "
           f"cells are mean ± standard deviation over those re-runs, not over the search trial it was picked on."),
        "- `trials`: search trials run, `failed`: raised an error (diverged, collapsed, wrecked, or another), `above "
        "floor`: trials that met the floor; a method marked ▼ is below it in its row: no trial met it (the row shows "
        "the one nearest to it), or the seed re-runs' mean falls under it.",
        f"- Behind each row: Optuna studies `{config.study_name}.<method>` (search) and `{config.study_name}.<method>"
        f".seeds` (re-runs) in {redacted(config.storage)}; `from trials` names the row's trials by number in them. "
        "Every trial's MLflow run id is in `tune_trials.csv` (`mlflow_run_id`): `kedro reproduce <run id>` runs it "
        "again.",
        "",
        "| method | setting | trials | failed | above floor | " + " | ".join(columns) + " | from trials |",
        "|" + "---|" * (6 + len(columns)),
    ]  # fmt: skip
    for _, row in table.iterrows():
        name = f"{row['method']} ▼" if row["below_floor"] else row["method"]
        if row["kind"] == "reference":
            name = f"*{row['method']}*"
        counts = ["", "", ""] if row["kind"] == "reference" else [str(row["trials"]), str(row["failed"]),
                                                                   str(row["above_floor"])]  # fmt: skip
        cells = [
            _log10_cell(row[f"log10_{c}"], row[f"log10_{c}_std"], int(row["seeds"]))
            if c in LOG10_COLUMNS
            else _cell(row[c], row[f"{c}_std"], int(row["seeds"]))
            for c in columns
        ]
        lines.append(f"| {name} | {row['setting']} | " + " | ".join(counts + cells) + f" | {row['from_trials']} |")
    return "\n".join(lines) + "\n"


def tradeoff_figure(
    trials: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    table: pd.DataFrame,
    config: TuneConfig,
    original: Mapping[str, float],
    retain: Mapping[str, float],
) -> Figure:
    """Every search trial of every method on the rule's two axes (small, faded), each method's seed re-runs (hollow)
    and their mean (large), or its Pareto front (a line); the floor, and the original and retain models as
    reference points. forget_quality is drawn as its log10, the picks at their seeds' mean log10. The seeds are drawn
    one by one, not as mean ± std bars."""
    rule = config.selection
    x_name, y_name = rule.objective, rule.floor_metric
    log10 = LOG10_COLUMNS.get(x_name)
    figure = Figure(figsize=(9, 6))
    ax = figure.subplots()

    def x_of(value: float) -> float:
        return log10(value) if log10 is not None else value

    def points(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        done = [t["metrics"] for t in records if t["state"] == "COMPLETE" and x_name in t["metrics"]]
        return [x_of(p[x_name]) for p in done], [p.get(y_name, math.nan) for p in done]

    picked_x = f"log10_{x_name}" if log10 is not None else x_name
    # forget_quality of a wrecked trial can be 1e-120 (or 0): such trials are drawn on the left edge, three decades
    # below the leftmost pick or reference, so that the picks keep the axis
    kept = [x_of(original.get(x_name, math.nan)), x_of(retain.get(x_name, math.nan)), *table[picked_x]]
    kept = [x for x in kept if math.isfinite(x)]
    edge = min(kept) - 3 if log10 is not None and kept else -math.inf
    for i, (method, phases) in enumerate(trials.items()):
        colour, marker = f"C{i % 10}", "os^Dv<>pPX"[i // 10 % 10]
        xs, ys = points(phases[SEARCH])
        ax.scatter([max(x, edge) for x in xs], ys, s=12, alpha=0.25, color=colour, marker=marker)
        picked = table[table["method"] == method]
        if rule.mode == "pareto":
            ax.plot(picked[picked_x], picked[y_name], "-", marker=marker, color=colour, label=method)
        elif len(picked):
            ax.scatter(*points(phases[SEEDS]), s=30, facecolors="none", edgecolors=colour, marker=marker)
            row = picked.iloc[0]
            ax.scatter([row[picked_x]], [row[y_name]], s=80, color=colour, marker=marker, edgecolors="black",
                       label=method)  # fmt: skip
    for name, metrics, style in (("original", original, "k*"), ("retain", retain, "g*")):
        ax.plot(x_of(metrics.get(x_name, math.nan)), metrics.get(y_name, math.nan), style, markersize=15, label=name)
    if rule.mode == "constrained":
        ax.axhline(rule.floor(original), color="grey", linestyle="--", linewidth=1, label="floor")
    if math.isfinite(edge):
        ax.set_xlim(left=edge - 0.5)
    ax.set_xlabel(f"log10 {x_name}" if log10 is not None else x_name)
    ax.set_ylabel(y_name)
    kind = "Pareto front" if rule.mode == "pareto" else "pick: mean of its seeds (large), each seed (hollow)"
    ax.set_title(f"every search trial (faded); each method's {kind}\n{rule.describe()}", fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="best")
    figure.tight_layout()
    return figure
