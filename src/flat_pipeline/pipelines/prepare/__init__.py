"""prepare: a named combination, data_prep then templates (everything FLAT needs before a model is trained).

Named combinations live as pipeline packages like any other, because Kedro 1.7 imports only the pipelines named on
the command line: a combination defined inside `register_pipelines` would not be found by `--pipelines prepare`.
"""

from kedro.pipeline import Pipeline

from flat_pipeline.pipelines import data_prep, templates


def create_pipeline(**kwargs) -> Pipeline:
    return data_prep.create_pipeline() + templates.create_pipeline()
