"""evaluate_external pipeline: the evaluate pipeline's sets and node for one model outside the catalog's roles."""

from kedro.pipeline import Node, Pipeline

from flat_pipeline.pipelines.evaluate.nodes import evaluate
from flat_pipeline.pipelines.evaluate.pipeline import evaluation_inputs

ROLE = "external"


def create_pipeline(**kwargs) -> Pipeline:
    outputs = [f"{ROLE}_evaluation_summary", f"{ROLE}_evaluation_items", f"{ROLE}_evaluation_metrics"]
    return evaluation_inputs() + Pipeline(
        [
            Pipeline(
                [
                    Node(
                        func=evaluate,
                        inputs=[
                            f"{ROLE}_model",
                            "evaluation_sets",
                            "template_pool",
                            "retain_reference",
                            "params:model",
                            "params:data_prep",
                            "params:evaluate",
                        ],
                        outputs=outputs,
                        name="evaluate_model_node",
                    )
                ],
                namespace=ROLE,
                inputs={f"{ROLE}_model", "evaluation_sets", "template_pool", "retain_reference"},
                outputs=set(outputs),
                parameters={"params:model", "params:data_prep", "params:evaluate"},
            ),
        ]
    )
