"""One nested MLflow run per benchmark method, under the run of the `kedro run` that kedro-mlflow opens.

Each method's nodes (its namespace: `flat_kl`, `npo`, ...) run with that method's child run active, so what they log
lands there under the keys a single-method run uses: the training curves (`train/unlearn/loss`, streamed while it
trains), the evaluation metrics (`forget_quality`, `model_utility`, ...), its catalog versions and, when asked, its
model. MLflow's compare and chart views then put FLAT and every baseline in one chart per metric. The child carries
the method's own merged parameters (`unlearn.learning_rate`, `unlearn.beta`, ...) and tags; the parent keeps the
leaderboard. The active run switches when a node of another namespace starts (nodes of different methods may
interleave), and every child is ended before kedro-mlflow ends the parent.

Spread over processes (`benchmark_worker --namespaces ...`), each process's run gets its methods' children; the run of
`benchmark_report`, which makes the leaderboard alone, then becomes the parent of the method runs whose summaries it
read (`benchmark_runs.adopt_method_runs`), so that a benchmark is one parent with its methods in either case.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.pipeline.node import Node
from mlflow.entities import RunStatus

from flat_pipeline.benchmark_runs import adopt_method_runs
from flat_pipeline.hooks.run_status import process_tags
from flat_pipeline.hooks.run_tags import GIT_COMMIT_TAG, RUN_NAME_TAG
from flat_pipeline.training.tracking import flatten, method_label

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
METHOD_TAG = "method"
BENCHMARK_METHOD_TAG = "benchmark_method"  # the namespace (flat_kl), beside `method` (flat-kl)
# Tags of the parent that hold for each child too.
LEADERBOARD_NODE = "leaderboard_node"
INHERITED_TAGS = ("kedro_env", "kedro_pipelines", "benchmark_source", "forget_split", "model", GIT_COMMIT_TAG)


class MethodRunsHook:
    """Opens, switches to and ends the child run of each method namespace of the run (`method_namespaces`)."""

    def __init__(self, method_namespaces: tuple[str, ...] | None = None) -> None:
        self._methods = method_namespaces
        self._children: dict[str, str] = {}  # namespace -> run id
        self._parent: str | None = None
        self._current: str | None = None  # the namespace whose child run is active
        self._adopts = False

    def _method_namespaces(self) -> tuple[str, ...]:
        if self._methods is None:
            from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

            self._methods = BENCHMARK_METHODS
        return self._methods

    @hook_impl
    def before_pipeline_run(self, pipeline: Any) -> None:
        self._children, self._current = {}, None
        active = mlflow.active_run()
        self._parent = active.info.run_id if active is not None else None
        # a leaderboard made alone (benchmark_report, after benchmark_worker processes): it adopts the method runs
        names = {node.name for node in pipeline.nodes}
        self._adopts = LEADERBOARD_NODE in names and not any(
            (node.namespace or "").split(".")[0] in self._method_namespaces() for node in pipeline.nodes
        )

    @hook_impl
    def before_node_run(self, node: Node) -> None:
        if self._parent is None:
            return
        namespace = (node.namespace or "").split(".")[0]
        target = namespace if namespace in self._method_namespaces() else None
        if target != self._current:
            self._leave_child(RunStatus.FINISHED)
            if target is not None:
                self._enter_child(target)
        elif target is not None and _active_run_id() != self._children[target]:
            # kedro-mlflow's before_node_run (called before this one) re-opens the parent on top of the child at
            # every node: the child goes back on top, so that the node logs into it
            mlflow.start_run(run_id=self._children[target], nested=True)

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        # the method's merged parameters (benchmark.methods.<name> over unlearn) are its child run's parameters
        if self._current is not None and node.name.endswith("method_parameters_node"):
            merged = next(iter(outputs.values()))
            mlflow.log_params(flatten(merged, "unlearn"))
            mlflow.set_tag(METHOD_TAG, method_label(merged))
        # the method's summary (its namespace's one output) holds its metrics: the child's forget_quality, ...
        if self._current is not None and node.name.endswith("method_record_node"):
            metrics = next(iter(outputs.values()))["metrics"]
            mlflow.log_metrics({name: value for name, value in metrics.items() if math.isfinite(value)}, step=0)

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self) -> None:
        self._leave_child(RunStatus.FINISHED)  # before kedro-mlflow ends the parent
        if self._adopts and self._parent is not None:
            adopted = adopt_method_runs(self._parent)
            logger.info("MLflow: run %s is now the parent of the %d method runs behind its leaderboard: %s",
                        self._parent, len(adopted), ", ".join(sorted(adopted.values())))  # fmt: skip
        self._parent = None

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self) -> None:
        self._leave_child(RunStatus.FAILED)
        self._parent = None

    def _enter_child(self, namespace: str) -> None:
        run_id = self._children.get(namespace)
        if run_id is None:
            parent = mlflow.get_run(self._parent)
            inherited = {key: parent.data.tags[key] for key in INHERITED_TAGS if key in parent.data.tags}
            env = parent.data.tags.get("kedro_env", "")
            tags = {
                PARENT_TAG: self._parent,
                RUN_NAME_TAG: f"{namespace} @{env}" if env else namespace,
                BENCHMARK_METHOD_TAG: namespace,
                **inherited,
                **process_tags(),  # so that a killed child is swept as FAILED like its parent (run_status.py)
            }
            run_id = mlflow.MlflowClient().create_run(parent.info.experiment_id, tags=tags).info.run_id
            self._children[namespace] = run_id
            logger.info("MLflow: method %s runs in child run %s of %s", namespace, run_id, self._parent)
        mlflow.start_run(run_id=run_id, nested=True)
        self._current = namespace

    def _leave_child(self, status: RunStatus) -> None:
        if self._current is None:
            return
        run_id = self._children[self._current]
        if _active_run_id() == run_id:
            mlflow.end_run(RunStatus.to_string(status))
        else:  # below the parent that kedro-mlflow re-opened at this node's start: ended where it lies
            mlflow.MlflowClient().set_terminated(run_id, RunStatus.to_string(status))
        self._current = None


def _active_run_id() -> str | None:
    active = mlflow.active_run()
    return active.info.run_id if active is not None else None
