"""MethodRunsHook's child runs end FINISHED however the nodes of the methods interleave, and whatever kedro-mlflow
pushes on mlflow's run stack before each node (it re-opens its run, nested, at every node)."""

from __future__ import annotations

import mlflow
from kedro.pipeline import Node

from flat_pipeline.hooks.method_runs import MethodRunsHook


def _node(namespace: str, name: str) -> Node:
    return Node(func=lambda: None, inputs=None, outputs="out", name=name, namespace=namespace)


def test_every_child_run_ends_finished_when_the_methods_nodes_interleave(tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("children", artifact_location=(tmp_path / "mlruns").as_uri())
        hook = MethodRunsHook(method_namespaces=("a", "b"))
        with mlflow.start_run(experiment_id=experiment) as parent:
            hook.before_pipeline_run()
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
