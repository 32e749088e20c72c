"""evaluate_external pipeline: the evaluate pipeline's sets and node for one model outside the catalog's roles."""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines.evaluate.pipeline import PARAMS, evaluate_node, evaluation_inputs

ROLE = "external"


def create_pipeline(**kwargs) -> Pipeline:
    outputs = [f"{ROLE}_evaluation_summary", f"{ROLE}_evaluation_items", f"{ROLE}_evaluation_metrics"]
    return evaluation_inputs() + Pipeline(
        [evaluate_node(f"{ROLE}_model", outputs)],
        namespace=ROLE,
        inputs={f"{ROLE}_model", "evaluation_sets", "template_pool", "retain_reference"},
        outputs=set(outputs),
        parameters=set(PARAMS),
    )
