"""The original and the retain model a run reads together come from one finetune run (issue 25): a finetune killed
between the two roles leaves a new original beside the previous retain model, which unlearning and forget_quality
must not mix without being told to."""

from __future__ import annotations

import shutil

import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline

from flat_pipeline.hooks.preflight import PreflightError, check_model_pair
from tests.kedro_runs import clone_project, run_session

KILLED = "2026-12-31T00.00.00.000Z"  # a later finetune run that saved its original model, then died


def _saved(folder, versions: dict[str, str]) -> DataCatalog:
    entries = {name: {"type": "json.JSONDataset", "filepath": str(folder / f"{name}.json"), "versioned": True}
               for name in ("original_model", "retain_model")}  # fmt: skip
    for name, version in versions.items():
        DataCatalog.from_config({name: entries[name]}, save_version=version).save(name, {"model": name})
    return DataCatalog.from_config(entries)


def test_the_pair_check_compares_the_versions_a_run_would_load(tmp_path):
    evaluate_both = Pipeline([Node(lambda o, r: None, ["original_model", "retain_model"], None, name="both")])
    check_model_pair(evaluate_both, _saved(tmp_path / "one_run", {"original_model": KILLED, "retain_model": KILLED}),
                     {}, "test")  # fmt: skip
    mixed = _saved(tmp_path / "killed", {"original_model": KILLED, "retain_model": "2026-12-01T00.00.00.000Z"})
    with pytest.raises(PreflightError, match=rf"^original_model version {KILLED} and retain_model version 2026-12-01"):
        check_model_pair(evaluate_both, mixed, {}, "test")
    check_model_pair(evaluate_both, mixed, {"original_model": KILLED}, "test")  # pinned: the pair is meant
    only_original = Pipeline([Node(lambda o: None, "original_model", None, name="one")])
    check_model_pair(only_original, mixed, {}, "test")  # a run that reads one of them has no pair to check


@pytest.mark.slow
def test_an_original_and_a_retain_model_of_different_finetune_runs_are_refused_unless_pinned(
    default_run_project, tmp_path_factory
):
    project = clone_project(default_run_project, tmp_path_factory.mktemp("pair") / "project")
    models = project / "data" / "test" / "06_models"
    (finished,) = [p.name for p in (models / "retain_model").iterdir()]
    shutil.copytree(models / "original_model" / finished, models / "original_model" / KILLED)

    message = (
        rf"^original_model version {KILLED} and retain_reference's retain_model version {finished} come from "
        r"different finetune runs \(one run saves both under one version\)(.|\n)*Run `kedro run --env test --pipelines "
        rf"finetune` again \(then the evaluations\); or take the original model of that retain model's run, "
        rf"--load-versions=original_model:{finished}; or say this pair is meant, "
        rf"--load-versions=original_model:{KILLED}\. Nothing was run\.$"
    )
    with pytest.raises(PreflightError, match=message):
        run_session(project, ["unlearn", "evaluate_unlearned"])

    # pinned: the user says which pair is meant, and the run goes ahead with it
    run_session(project, ["unlearn", "evaluate_unlearned"], load_versions={"original_model": finished})


def test_a_retain_reference_from_outside_the_catalog_has_no_pair_to_check(tmp_path):
    """An imported open-unlearning log (or a model folder outside the catalog) made the reference: no finetune run of
    this project to compare with."""
    _saved(tmp_path, {"original_model": KILLED})
    entries = {name: {"type": "json.JSONDataset", "filepath": str(tmp_path / f"{name}.json"), "versioned": True}
               for name in ("original_model", "retain_model", "retain_reference")}  # fmt: skip
    log = "open-unlearning log data/01_raw/tofu_retain90/TOFU_EVAL.json"
    DataCatalog.from_config(entries).save("retain_reference", {"retain_model": log})
    unlearn = Pipeline([Node(lambda o, r: None, ["original_model", "retain_reference"], None, name="unlearn")])
    check_model_pair(unlearn, DataCatalog.from_config(entries), {}, "tofu")
