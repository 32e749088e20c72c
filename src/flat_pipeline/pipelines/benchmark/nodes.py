"""Nodes of the benchmark pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from flat_pipeline.pipelines.evaluate.nodes import evaluate
from flat_pipeline.training.tracking import active_run_id

# Default leaderboard columns (`benchmark.leaderboard.columns`), in order: open-unlearning's TOFU headline numbers,
# then what tells templated answers apart.
COLUMNS = [
    "forget_quality",
    "model_utility",
    "forget_truth_ratio",
    "forget_Q_A_ROUGE",
    "retain_Q_A_ROUGE",
    "forget_Q_A_EM",
    "retain_Q_A_EM",
    "forget_Q_A_template_rate",
    "privleak",
    "mia_min_k",
    "forget_verbmem_ROUGE",
    "holdout_perplexity",
]


def method_parameters(
    unlearn_params: dict[str, Any], overrides: dict[str, Any], trajectory: dict[str, Any] | None, name: str
) -> dict[str, Any]:
    """The `unlearn` parameters with one method's entry of `benchmark.methods` on top: every method shares the
    optimiser, learning rate, epochs and batch size of `unlearn` unless its entry says otherwise. Checkpoints
    (`unlearn.output_dir`) go to a folder of the method's own, so that no method resumes from another's.

    `trajectory` (`benchmark.trajectory`) is set key by key over `unlearn.trajectory` for every method (a method's
    own `trajectory` entry replaces both), so the benchmark can trace curves while `kedro run` does not."""
    merged = {**unlearn_params}
    if trajectory:
        merged["trajectory"] = {**(unlearn_params.get("trajectory") or {}), **trajectory}
    merged.update(overrides)
    if merged.get("output_dir"):
        merged["output_dir"] = str(Path(merged["output_dir"]) / name)
    return merged


def evaluate_method(*args: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """`evaluate` of one method's unlearned model: its summary and item table. The summary's metrics reach the
    method's MLflow child run from `method_record`'s output (hooks/method_runs.py)."""
    report, items, _ = evaluate(*args)
    return report, items


def method_record(summary: dict[str, Any], items: pd.DataFrame, history: dict[str, list[float]]) -> dict[str, Any]:
    """A method's evaluation summary for the leaderboard, with what its unlearning and evaluation amounted to: the
    optimiser steps and last training loss, and the items scored per evaluation set.

    It reads the method's item table and training history, the last outputs of its namespace: collapsed in kedro-viz,
    a method is then one box whose one output feeds the leaderboard (kedro-viz draws every unread output of a
    namespace beside its box).
    """
    losses = history.get("unlearn_loss") or []
    per_set = items.groupby("set").size() if "set" in items.columns else pd.Series(dtype=int)
    return {
        **summary,
        "training": {"steps": len(losses), "last_loss": losses[-1] if losses else None},
        "items": {str(name): int(count) for name, count in per_set.items()},
        # the MLflow run that holds this method's numbers (its child run): `kedro reproduce <id>` makes them again
        "mlflow_run_id": active_run_id(),
    }


def leaderboard(
    benchmark_params: dict[str, Any], **summaries: dict[str, Any]
) -> tuple[pd.DataFrame, str, Figure, pd.DataFrame, str, Figure]:
    """The methods' summaries side by side, with the original and retain models as reference rows.

    `benchmark.leaderboard` chooses the columns, the sort (TOFU: forget_quality, higher is closer to the retain model)
    and the scatter's two axes, so that each benchmark's environment shows its own suite.

    Returns:
        The table (CSV), the same as markdown, the scatter of the two chosen metrics, and the three again for the
        MLflow run.
    """
    board = {"sort_by": "forget_quality", "descending": True, **benchmark_params.get("leaderboard", {})}
    columns, sort_by = list(board.get("columns") or COLUMNS), board["sort_by"]
    if sort_by not in columns:
        raise ValueError(
            f"parameter benchmark.leaderboard.sort_by: '{sort_by}' is not one of the columns {columns}. The methods' "
            f"summaries are saved: fix it and run `kedro run --pipelines benchmark --nodes leaderboard_node`"
        )
    rows = []
    for key, summary in summaries.items():
        name = key.removesuffix("_evaluation_summary").removesuffix(".evaluation_summary")
        row = {"method": name, **{column: summary["metrics"].get(column, math.nan) for column in columns}}
        row["kind"] = "reference" if name in ("original", "retain") else "unlearned"
        row["mlflow_run_id"] = summary.get("mlflow_run_id")
        rows.append(row)
    # ties (methods that barely moved share a forget_quality) broken by model_utility, where reported
    keys = ["kind", sort_by, *(["model_utility"] if "model_utility" in columns and sort_by != "model_utility" else [])]
    order = [True, not board["descending"], False][: len(keys)]
    table = pd.DataFrame(rows).sort_values(keys, ascending=order)
    table = table.reset_index(drop=True)
    markdown = _markdown(table, columns, board, benchmark_params.get("title", "unlearning methods"))
    figure = _scatter(table, *board.get("scatter", ("forget_quality", "model_utility")))
    return table, markdown, figure, table, markdown, figure


def _markdown(table: pd.DataFrame, columns: list[str], board: dict[str, Any], title: str) -> str:
    order = "higher" if board["descending"] else "lower"
    lines = [
        f"# Leaderboard: {title}",
        "",
        f"Sorted by {board['sort_by']}, {order} first. `original` and `retain` are the reference rows.",
        "",
        "| " + " | ".join(["method", *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for _, row in table.iterrows():
        cells = [str(row["method"])] + [_format(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    runs = [f"{row['method']}: {row['mlflow_run_id']}" for _, row in table.iterrows() if row.get("mlflow_run_id")]
    if runs:
        lines += ["", "MLflow runs behind each row (`kedro reproduce <run id>` makes them again): " + "; ".join(runs)]
    return "\n".join(lines) + "\n"


def _format(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")


def _scatter(table: pd.DataFrame, x: str, y: str) -> Figure:
    """`y` against `x` per method; forget_quality (a p-value spanning many decades) on a log axis. A standalone
    `Figure` (no pyplot, no backend), as in evaluate's `compare_models`."""
    log_x = x == "forget_quality"
    figure = Figure(figsize=(6.5, 4.5))
    ax = figure.subplots()
    for _, row in table.iterrows():
        x_value = max(row.get(x, math.nan), 1e-30) if log_x else row.get(x, math.nan)  # a log axis cannot show 0
        marker = "s" if row["kind"] == "reference" else ("*" if str(row["method"]).startswith("flat") else "o")
        ax.scatter(x_value, row.get(y, math.nan), marker=marker, s=70)
        ax.annotate(str(row["method"]), (x_value, row.get(y, math.nan)), fontsize=8, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(f"{x} (log)" if log_x else x)
    ax.set_ylabel(y)
    ax.set_title(f"{x} vs {y}")
    figure.tight_layout()
    return figure
