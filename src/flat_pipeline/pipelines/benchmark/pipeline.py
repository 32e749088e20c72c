"""benchmark pipeline: one namespaced unlearn + evaluate per method, then the leaderboard.

The methods are `BENCHMARK_METHODS` (namespace -> its entry in `benchmark.methods`, parameters_benchmark.yml); run a
subset with `kedro run --pipelines benchmark --namespaces flat_kl,npo` (the leaderboard then needs the others' latest
summaries in the catalog).

A method's namespace keeps its datasets (`npo.unlearned_model`, `npo.evaluation_items`, ...) but for its evaluation
summary, which the leaderboard reads: that one leaves the namespace as `benchmark_<method>_evaluation_summary`
(`summary_of`), so that no node outside a namespace names a dataset inside one (Kedro warns of dotted names there).
Collapsed in kedro-viz, each method is one box whose one output, the summary, feeds the leaderboard: kedro-viz draws
every output of a namespace that none of its nodes reads beside its box, so the last node (`method_record`) reads
the method's item table and training history. The summary's metrics go to the method's MLflow child run
(hooks/method_runs.py).
"""

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import PARAMS, evaluate_node, evaluation_inputs
from flat_pipeline.pipelines.unlearn.pipeline import unlearn_node

from .nodes import evaluate_method, leaderboard, method_parameters, method_record

BENCHMARK_METHODS = (
    "flat_kl",
    "flat_js",
    "flat_pearson",
    "flat_tv",
    "ga",
    "gd",
    "kl",
    "npo",
    "simnpo",
    "idk_dpo",
    "idk_nll",
    "rmu",
)
SHARED = {"original_model", "forget_templates", "retain_set", "evaluation_sets", "template_pool", "retain_reference"}


def summary_of(method: str) -> str:
    """The catalog name of a method's evaluation summary (catalog pattern `benchmark_{method}_evaluation_summary`)."""
    return f"benchmark_{method}_evaluation_summary"


def _method(name: str) -> Pipeline:
    return Pipeline(
        [
            Node(
                func=update_wrapper(partial(method_parameters, name=name), method_parameters),
                inputs=["params:unlearn", f"params:benchmark.methods.{name}", "params:benchmark.trajectory"],
                outputs="unlearn_parameters",
                name="method_parameters_node",
                tags="unlearn",
            ),
            unlearn_node("unlearn_parameters", with_reference=True),
            evaluate_node("unlearned_model", ["evaluation", "evaluation_items"], func=evaluate_method),
            Node(
                func=method_record,
                inputs=["evaluation", "evaluation_items", "unlearn_metrics"],
                outputs="evaluation_summary",
                name="method_record_node",
                tags="evaluate",
            ),
        ],
        namespace=name,
        inputs=SHARED,
        outputs={"evaluation_summary": summary_of(name)},
        parameters={
            "params:unlearn",
            f"params:benchmark.methods.{name}",
            "params:benchmark.trajectory",
            "params:templates",
            *PARAMS,
        },
    )


def create_pipeline(**kwargs) -> Pipeline:
    shared = evaluation_inputs()
    # argument name -> dataset: the leaderboard names each row after its argument (`npo_evaluation_summary` -> npo)
    summaries = {
        "original_evaluation_summary": "original_evaluation_summary",
        "retain_evaluation_summary": "retain_evaluation_summary",
        **{f"{name}_evaluation_summary": summary_of(name) for name in BENCHMARK_METHODS},
    }
    board = Pipeline(
        [
            Node(
                func=leaderboard,
                inputs={"benchmark_params": "params:benchmark", **summaries},
                outputs=[
                    "leaderboard_table",
                    "leaderboard_markdown",
                    "leaderboard_scatter",
                    "leaderboard_table_artifact",
                    "leaderboard_markdown_artifact",
                    "leaderboard_scatter_artifact",
                ],
                name="leaderboard_node",
                tags="report",
            )
        ]
    )
    return shared + sum((_method(name) for name in BENCHMARK_METHODS), Pipeline([])) + board
