"""benchmark pipeline: one namespaced unlearn + evaluate per method, then the leaderboard.

The methods are `BENCHMARK_METHODS` (namespace -> its entry in `benchmark.methods`, parameters_benchmark.yml).
Spread over processes, GPUs or machines: `benchmark_worker` is the methods alone, each namespace with its own copy
of the evaluation inputs (in-memory sets), so that `kedro run --pipelines benchmark_worker --namespaces flat_kl,npo`
runs those two whole; `benchmark_report` then makes the leaderboard from the latest summaries of every method, and
its MLflow run becomes the parent of the method runs that saved them (hooks/method_runs.py).

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


def _method(name: str, *, own_inputs: bool = False) -> Pipeline:
    """A method's nodes; `own_inputs`: with the evaluation sets and template pool built among them."""
    return (evaluation_inputs() if own_inputs else Pipeline([])) + Pipeline(
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
        ]
    )


def _namespaced(name: str, *, own_inputs: bool = False) -> Pipeline:
    """A method's namespace, whose one output (its evaluation summary) leaves it for the leaderboard."""
    inputs = SHARED
    if own_inputs:  # the evaluation inputs' own inputs instead of their outputs
        built = evaluation_inputs()
        inputs = (SHARED - built.all_outputs()) | {i for i in built.inputs() if not i.startswith("params:")}
    return Pipeline(
        _method(name, own_inputs=own_inputs),
        namespace=name,
        inputs=inputs,
        outputs={"evaluation_summary": summary_of(name)},
        parameters={
            "params:unlearn",
            f"params:benchmark.methods.{name}",
            "params:benchmark.trajectory",
            "params:templates",
            *PARAMS,
        },
    )


def worker_pipeline() -> Pipeline:
    """Every method, each namespace whole (its evaluation inputs inside): run a share with `--namespaces`."""
    return sum((_namespaced(name, own_inputs=True) for name in BENCHMARK_METHODS), Pipeline([]))


def report_pipeline() -> Pipeline:
    """The leaderboard from every method's latest summary in the catalog, whichever process saved it."""
    # argument name -> dataset: the leaderboard names each row after its argument (`npo_evaluation_summary` -> npo)
    summaries = {
        "original_evaluation_summary": "original_evaluation_summary",
        "retain_evaluation_summary": "retain_evaluation_summary",
        **{f"{name}_evaluation_summary": summary_of(name) for name in BENCHMARK_METHODS},
    }
    return Pipeline(
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


def create_pipeline(**kwargs) -> Pipeline:
    methods = sum((_namespaced(name) for name in BENCHMARK_METHODS), Pipeline([]))
    return evaluation_inputs() + methods + report_pipeline()
