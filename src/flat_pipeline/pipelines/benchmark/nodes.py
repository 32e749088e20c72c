"""Nodes of the benchmark pipeline."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # nodes run without a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# Leaderboard columns, in order: open-unlearning's headline numbers, then what tells templated answers apart.
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


def method_parameters(unlearn_params: dict[str, Any], overrides: dict[str, Any], name: str) -> dict[str, Any]:
    """The `unlearn` parameters with one method's entry of `benchmark.methods` on top: every method shares the
    optimiser, learning rate, epochs and batch size of `unlearn` unless its entry says otherwise. Checkpoints
    (`unlearn.output_dir`) go to a folder of the method's own, so that no method resumes from another's."""
    merged = {**unlearn_params, **overrides}
    if merged.get("output_dir"):
        merged["output_dir"] = str(Path(merged["output_dir"]) / name)
    return merged


def leaderboard(
    benchmark_params: dict[str, Any], **summaries: dict[str, Any]
) -> tuple[pd.DataFrame, str, Any, pd.DataFrame, str, Any]:
    """The methods' summaries side by side, with the original and retain models as reference rows.

    Rows are sorted by forget_quality (higher: closer to the retain model), ties by model_utility.

    Returns:
        The table (CSV), the same as markdown, the forget_quality vs model_utility scatter, and the three again for
        the MLflow run.
    """
    rows = []
    for key, summary in summaries.items():
        name = key.removesuffix("_evaluation_summary").removesuffix(".evaluation_summary")
        row = {"method": name, **{column: summary["metrics"].get(column, math.nan) for column in COLUMNS}}
        row["kind"] = "reference" if name in ("original", "retain") else "unlearned"
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["kind", "forget_quality", "model_utility"], ascending=[True, False, False])
    table = table.reset_index(drop=True)
    markdown = _markdown(table, benchmark_params)
    figure = _scatter(table)
    return table, markdown, figure, table, markdown, figure


def _markdown(table: pd.DataFrame, benchmark_params: dict[str, Any]) -> str:
    columns = ["method", *COLUMNS]
    lines = [
        f"# Leaderboard: {benchmark_params.get('title', 'unlearning methods')}",
        "",
        "Sorted by forget_quality (KS-test p-value against the retain model's forget truth ratios; higher is closer "
        "to a model never trained on the forget set), then model_utility. `original` and `retain` are the "
        "reference rows.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for _, row in table.iterrows():
        cells = [str(row["method"])] + [_format(row[c]) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _format(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")


def _scatter(table: pd.DataFrame) -> Any:
    figure, ax = plt.subplots(figsize=(6.5, 4.5))
    for _, row in table.iterrows():
        quality = max(row["forget_quality"], 1e-30)  # a log axis cannot show 0
        marker = "s" if row["kind"] == "reference" else ("*" if str(row["method"]).startswith("flat") else "o")
        ax.scatter(quality, row["model_utility"], marker=marker, s=70)
        ax.annotate(str(row["method"]), (quality, row["model_utility"]), fontsize=8, xytext=(4, 3),
                    textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("forget_quality (log)")
    ax.set_ylabel("model_utility")
    ax.set_title("forget quality vs model utility (top right is best)")
    figure.tight_layout()
    return figure
