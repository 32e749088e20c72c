"""MethodRunsHook's child runs end FINISHED however the nodes of the methods interleave, and whatever kedro-mlflow
pushes on mlflow's run stack before each node (it re-opens its run, nested, at every node)."""

from __future__ import annotations

import mlflow
from kedro.pipeline import Node, Pipeline

from flat_pipeline.hooks.method_runs import MethodRunsHook


def _node(namespace: str | None, name: str) -> Node:
    return Node(func=lambda: None, inputs=None, outputs=f"{namespace}.{name}.out", name=name, namespace=namespace)


def test_every_child_run_ends_finished_when_the_methods_nodes_interleave(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("children", artifact_location=(tmp_path / "mlruns").as_uri())
        hook = MethodRunsHook(method_namespaces=("a", "b"))
        with mlflow.start_run(experiment_id=experiment) as parent:
            hook.before_pipeline_run(Pipeline([_node(n, "method_record_node") for n in ("a", "b")]))
            # the runner's order for two methods of three nodes each: stage by stage, as Kedro's toposort gives it
            for step in ("method_parameters_node", "unlearn_model_node", "method_record_node"):
                for namespace in ("a", "b"):
                    mlflow.start_run(run_id=parent.info.run_id, nested=True)  # kedro-mlflow's before_node_run
                    hook.before_node_run(_node(namespace, step))
                    # the node logs into its method's child run
                    assert mlflow.active_run().data.tags["benchmark_method"] == namespace
            hook.after_pipeline_run()
            while mlflow.active_run() and mlflow.active_run().info.run_id != parent.info.run_id:
                mlflow.end_run()
        children = mlflow.search_runs(
            [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list"
        )
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
    assert sorted((r.data.tags["benchmark_method"], r.info.status) for r in children) == [
        ("a", "FINISHED"),
        ("b", "FINISHED"),
    ]


def test_a_leaderboard_made_alone_adopts_the_method_runs_that_saved_what_it_read(tmp_path):
    """benchmark_report after benchmark_worker processes: the report's run becomes the parent of each method run whose
    summary version it loaded, matched on the version though every machine sees the shared data under its own path."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary = "data/test/08_reporting/benchmark/{}_evaluation_summary.json/{}/{}_evaluation_summary.json"
    try:
        experiment = mlflow.create_experiment("report", artifact_location=(tmp_path / "mlruns").as_uri())
        client = mlflow.MlflowClient()
        worker = client.create_run(experiment).info.run_id
        saved = {
            method: client.create_run(experiment, tags={
                "mlflow.parentRunId": worker,
                f"saved/benchmark_{method}_evaluation_summary": f"/machine_a/{summary.format(method, version, method)}",
            }).info.run_id
            for method, version in (("a", "2026-12-07T10.00.00.000Z"), ("b", "2026-12-07T10.00.01.000Z"))
        }  # fmt: skip
        older_a = client.create_run(experiment, tags={  # an earlier version of a's summary: not the one read
            "saved/benchmark_a_evaluation_summary": f"/machine_a/{summary.format('a', '2026-12-06T10.00.00.000Z', 'a')}"
        }).info.run_id  # fmt: skip
        hook = MethodRunsHook(method_namespaces=("a", "b"))
        with mlflow.start_run(experiment_id=experiment) as report:
            mlflow.set_tags({
                f"loaded/benchmark_{method}_evaluation_summary": f"/machine_c/{summary.format(method, version, method)}"
                for method, version in (("a", "2026-12-07T10.00.00.000Z"), ("b", "2026-12-07T10.00.01.000Z"))
            })  # fmt: skip
            hook.before_pipeline_run(Pipeline([_node(None, "leaderboard_node")]))
            hook.after_pipeline_run()
        parents = {run: client.get_run(run).data.tags.get("mlflow.parentRunId") for run in [*saved.values(), older_a]}
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous)
    assert parents == {saved["a"]: report.info.run_id, saved["b"]: report.info.run_id, older_a: None}
