"""Checks before the first node (flat_pipeline.hooks.PreflightHook): bad parameters, missing saved inputs and an
environment without state of its own stop `kedro run` with nothing written and no MLflow run opened; environments
never read each other's artifacts."""

import pytest
from kedro.framework.session import KedroSession

from flat_pipeline.config import ParameterError
from flat_pipeline.hooks.preflight import PreflightError, check_environment_state, check_writable
from tests.kedro_runs import run_session


def written_files(project):
    return sorted(p.relative_to(project) for p in (project / "data").rglob("*") if p.is_file() and p.name != ".gitkeep")


def mlflow_runs(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


@pytest.mark.parametrize(
    ("runtime_params", "message"),
    [
        ({"unlearn": {"learning_rate": 0}}, "parameter unlearn.learning_rate: expected a finite number > 0, got 0"),
        ({"unlaern": {"learning_rate": 1e-4}}, "parameter block 'unlaern' is unknown (did you mean 'unlearn'?)"),
        (
            {"data_prep": {"forget_spilt": "forget05"}},
            "parameter data_prep.forget_spilt: unknown key (did you mean 'forget_split'?)",
        ),
        (  # the default run's unlearning reads no retain reference: refused before the finetunes, not after them
            {"unlearn": {"trajectory": {"every": "epoch", "metrics": ["forget_quality"]}}},
            "parameter unlearn.trajectory.metrics: ['forget_quality'] compare with the retain model's numbers",
        ),
    ],
)
def test_a_bad_parameter_stops_the_full_run_before_any_node(project, runtime_params, message):
    with pytest.raises(ParameterError) as error:
        run_session(project, ["__default__"], runtime_params)
    assert message in str(error.value)
    assert str(error.value).startswith("1 parameter problem(s); nothing was run:")
    assert written_files(project) == []
    assert len(mlflow_runs(project)) == 0


def test_a_pipeline_whose_inputs_were_never_made_names_them_and_their_pipeline(project):
    with pytest.raises(PreflightError) as error:
        run_session(project, ["benchmark"])
    message = str(error.value)
    assert message.startswith("this run loads 9 dataset(s) that no earlier run of environment 'test' saved")
    assert f"  - retain_reference (in {project}/data/test/07_model_output/retain_reference.json): made by " in message
    assert "`kedro run --env test --pipelines evaluate` (or pipeline import_retain_logs, evaluate_retain)" in message
    assert "  - original_model (in" in message and "`kedro run --env test --pipelines finetune`" in message
    assert written_files(project) == []


def test_environments_keep_their_own_state(project):
    run_session(project, ["data_prep"], env="test")
    assert written_files(project) and all(path.parts[:2] == ("data", "test") for path in written_files(project))
    # the default environment does not see the test environment's forget set
    with pytest.raises(PreflightError, match=r"  - forget_set \(in .*/data/02_intermediate/forget_set\): made by "
                       r"`kedro run --pipelines data_prep`"):  # fmt: skip
        run_session(project, ["templates"], env=None)
    runs = mlflow_runs(project)
    experiments = {r.name for r in __import__("mlflow").search_experiments()}
    assert "flat_pipeline_test" in experiments and len(runs) == 1


def test_an_environment_without_state_of_its_own_is_refused(project):
    scratch = project / "conf" / "scratch"
    scratch.mkdir()
    (scratch / "parameters.yml").write_text("data_prep:\n  synthetic:\n    n_authors: 10\n")
    with pytest.raises(PreflightError, match=r"environment 'scratch' keeps no state of its own: .*globals.yml must "
                       r"set data_root and mlflow_experiment"):  # fmt: skip
        run_session(project, ["data_prep"], env="scratch")
    (scratch / "globals.yml").write_text("data_root: data/test\nmlflow_experiment: flat_pipeline_scratch\n")
    with pytest.raises(PreflightError, match=r"environments 'scratch' and 'test' share data_root 'data/test'"):
        run_session(project, ["data_prep"], env="scratch")
    assert written_files(project) == []


def test_a_local_environment_reusing_another_environments_data_root_is_refused(project):
    """conf/local keeps base's state, or its own; another environment's (written another way) is refused."""
    local = project / "conf" / "local" / "globals.yml"
    local.write_text("data_root: data\n")
    check_environment_state(project / "conf", "local")  # base's own: `kedro run`'s default
    local.write_text("data_root: ./data/tofu/\n")
    with pytest.raises(PreflightError, match=r"^environments 'local' and 'tofu' share data_root 'data/tofu'"):
        check_environment_state(project / "conf", "local")
    with pytest.raises(PreflightError, match=r"environments 'local' and 'tofu' share data_root"):
        run_session(project, ["data_prep"], env=None)
    assert written_files(project) == []


def test_a_pinned_version_that_does_not_exist_is_named(project):
    run_session(project, ["data_prep"])
    missing = r"  - forget_set \(version 2020-01-01T00.00.00.000Z in .*/data/test/"
    with KedroSession.create(project_path=project, env="test") as session, pytest.raises(PreflightError, match=missing):
        session.run(pipeline_names=["templates"], load_versions={"forget_set": "2020-01-01T00.00.00.000Z"})


def test_a_missing_template_file_stops_only_the_runs_that_make_templates(project):
    """conf/tofu takes TOFU's idontknow.jsonl from beside the splits: a run that makes templates without it stops
    naming the file; a run that makes none (importing models) is not held up by it."""
    with pytest.raises(ParameterError, match="parameter templates.file: template file 'data/01_raw/tofu/idontknow"):
        run_session(project, ["templates"], env="tofu")
    assert written_files(project) == []
    with pytest.raises(PreflightError) as error:  # further on: its inputs were never made, the file is no matter
        run_session(project, ["evaluate_original"], env="tofu")
    assert "templates.file" not in str(error.value)


def test_templates_from_the_base_model_need_a_saved_one_or_the_run_that_makes_it(project):
    """`templates.generated.model: null` generates with the run's base model: a templates run before any finetune is
    refused naming the parameter and the pipeline that saves one; the project's own templates (idk) need none."""
    run_session(project, ["data_prep"])
    generated = {"templates": {"source": "generated"}}
    with pytest.raises(ParameterError) as error:
        run_session(project, ["templates"], generated)
    assert (
        "parameter templates.generated.model: null generates the templates with the run's base model, and no "
        "base_model is saved in this environment yet: run `kedro run --pipelines finetune` first"
    ) in str(error.value)
    assert not (project / "data/test/05_model_input/forget_templates").exists()
    run_session(project, ["templates"])  # idk: the base model folder is read as None and not needed
    assert (project / "data/test/05_model_input/forget_templates").is_dir()


def test_a_destination_the_run_cannot_write_stops_it_before_any_node(project):
    """The data root under a file (a read-only mount behaves alike; chmod does not stop root, who runs CI): refused
    before the first node, naming the datasets and the folder, not after the training (issue 25)."""
    (project / "blocker").write_text("a file where a folder should be\n")
    (project / "conf" / "test" / "globals.yml").write_text(
        "data_root: blocker/data\nmlflow_experiment: flat_pipeline_test\n"
    )
    with pytest.raises(PreflightError, match=r"this run cannot write \d+ of its destinations; nothing was run:\n  - "
                       r"(.|\n)*benchmark_splits(.|\n)*blocker is a file, not a folder"):  # fmt: skip
        run_session(project, ["data_prep"], env="test")
    assert written_files(project) == [] and len(mlflow_runs(project)) == 0


def test_an_mlflow_store_the_run_cannot_write_is_named(tmp_path):
    from kedro.io import DataCatalog
    from kedro.pipeline import Pipeline

    (tmp_path / "blocker").write_text("")
    with pytest.raises(PreflightError, match=r"  - the MLflow store: .*mlflow.db: .*blocker is a file, not a folder"):
        check_writable(Pipeline([]), DataCatalog(), tracking_uri=f"sqlite:///{tmp_path / 'blocker' / 'mlflow.db'}")
    check_writable(Pipeline([]), DataCatalog(), tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
