"""A benchmark as MLflow holds it: the run of `kedro run --pipelines benchmark` (the parent, with the leaderboard
artifacts) and one nested child run per method, with that method's metrics under their own names (`forget_quality`,
`model_utility`, ...) and the method in tag `method` (hooks/method_runs.py logs them so). For the notebook and for
scripts that compare FLAT with the baselines.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Run

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own link from a nested run to its parent
METHOD_TAG = "method"
BENCHMARK_METHOD_TAG = "benchmark_method"


def latest_benchmark(experiment: str, tracking_uri: str | None = None) -> tuple[Run, pd.DataFrame]:
    """The latest benchmark run of `experiment` (the latest-started run that has child runs) and its methods.

    Args:
        experiment: the MLflow experiment (`flat_pipeline_<env>`, conf/<env>/globals.yml).
        tracking_uri: the store; None: the current one (in a Kedro session, the one kedro-mlflow set).

    Returns:
        The parent run, and one row per child run: `method`, `run_id`, `status`, then each metric's last value.

    Raises:
        LookupError: no such experiment, or no run in it has child runs (no benchmark has run, or only one from
            before methods had runs of their own).
    """
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"MLflow at {tracking_uri or mlflow.get_tracking_uri()} has no experiment '{experiment}'")
    children = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{PARENT_TAG}` LIKE '%'", order_by=["attributes.start_time DESC"]
    )
    if not children:
        raise LookupError(
            f"no run of experiment '{experiment}' has child runs: run `kedro run --pipelines benchmark` (each method "
            f"gets a child run of its own)"
        )
    # a benchmark's children start after it, but two benchmarks may overlap: compare the parents themselves
    parents = [client.get_run(run_id) for run_id in {child.data.tags[PARENT_TAG] for child in children}]
    parent = max(parents, key=lambda run: run.info.start_time)
    rows = [
        {
            # the benchmark's own name of the entry (flat_kl), unique where two entries run one method
            "method": child.data.tags.get(BENCHMARK_METHOD_TAG) or child.data.tags.get(METHOD_TAG, child.info.run_name),
            "run_id": child.info.run_id,
            "status": child.info.status,
            **child.data.metrics,
        }
        for child in children
        if child.data.tags[PARENT_TAG] == parent.info.run_id
    ]
    return parent, pd.DataFrame(rows).sort_values("method", ignore_index=True)


def adopt_method_runs(parent_id: str, tracking_uri: str | None = None) -> dict[str, str]:
    """Make `parent_id` (a leaderboard made alone: `benchmark_report`) the parent of the method runs whose summaries
    it read: for each `loaded/benchmark_<method>_evaluation_summary` tag of the parent, the run tagged as having saved
    that version (`saved/...`, hooks/run_tags.py), matched on the version folder and file name, since each process
    or machine may see the shared data folder under its own path. Returns {method summary dataset: run id}."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_id)
    adopted = {}
    for key, path in parent.data.tags.items():
        dataset = key.removeprefix("loaded/")
        if not (key.startswith("loaded/benchmark_") and dataset.endswith("_evaluation_summary")):
            continue
        version_and_file = "/".join(path.replace("\\", "/").split("/")[-2:]).replace("'", "\\'")
        found = client.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`saved/{dataset}` LIKE '%/{version_and_file}'"
        )
        for run in found:
            client.set_tag(run.info.run_id, PARENT_TAG, parent_id)
            adopted[dataset] = run.info.run_id
    return adopted


def is_flat(methods: pd.Series) -> pd.Series:
    """FLAT's rows (`flat`, `flat-kl`, `flat_js`, ...) against the baselines'."""
    return methods.astype(str).str.startswith("flat")
