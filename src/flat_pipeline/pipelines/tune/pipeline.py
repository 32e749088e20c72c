"""tune pipeline: `tune_worker_node` runs this process's share of every method's trials (start it on as many
processes, GPUs or machines as you like, all on one `tune.storage`), `tune_report_node` assembles the tuned
leaderboard from the storage. `kedro run --pipelines tune` does both in one process; `tune_worker` and `tune_report`
are the two halves, for many workers and one report."""

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import evaluation_inputs

from .nodes import tune_report, tune_worker


def worker_pipeline() -> Pipeline:
    return evaluation_inputs() + Pipeline(
        [
            Node(
                func=tune_worker,
                inputs={
                    "original_model": "original_model",
                    "forget_templates": "forget_templates",
                    "retain_set": "retain_set",
                    "evaluation_sets": "evaluation_sets",
                    "template_pool": "template_pool",
                    "retain_reference": "retain_reference",
                    "original_evaluation_summary": "original_evaluation_summary",
                    "model_params": "params:model",
                    "unlearn_params": "params:unlearn",
                    "templates_params": "params:templates",
                    "benchmark_params": "params:benchmark",
                    "evaluate_params": "params:evaluate",
                    "data_prep_params": "params:data_prep",
                    "tune_params": "params:tune",
                },
                outputs="tune_worker_summary",
                name="tune_worker_node",
                tags="unlearn",
            )
        ]
    )


def report_pipeline() -> Pipeline:
    return Pipeline(
        [
            Node(
                func=tune_report,
                inputs=[
                    "tune_worker_summary",
                    "original_evaluation_summary",
                    "retain_evaluation_summary",
                    "params:tune",
                    "params:benchmark",
                ],
                outputs=[
                    "tuned_leaderboard_table",
                    "tuned_leaderboard_markdown",
                    "tuned_tradeoff",
                    "tune_trials",
                    "tuned_leaderboard_table_artifact",
                    "tuned_leaderboard_markdown_artifact",
                    "tuned_tradeoff_artifact",
                ],
                name="tune_report_node",
                tags="report",
            )
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    return worker_pipeline() + report_pipeline()
