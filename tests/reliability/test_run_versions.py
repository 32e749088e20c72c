"""A run reads back what it wrote (RunVersionsHook), not a newer version another run saved meanwhile."""

from __future__ import annotations

from kedro.io import DataCatalog
from kedro.pipeline import Node, Pipeline

from flat_pipeline.hooks import RunVersionsHook

EARLIER, LATER = "2026-12-07T06.00.00.000Z", "2026-12-07T06.00.04.000Z"


def _catalog(folder, save_version: str, load_versions: dict[str, str] | None = None) -> DataCatalog:
    versioned = {"type": "json.JSONDataset", "filepath": str(folder / "result.json"), "versioned": True}
    return DataCatalog.from_config(
        {
            "result": versioned,
            "model@json": {**versioned, "filepath": str(folder / "model.json")},
            "model@again": {**versioned, "filepath": str(folder / "model.json")},
            "given": {**versioned, "filepath": str(folder / "given.json")},
        },
        save_version=save_version,
        load_versions=load_versions,
    )


def _writer() -> Pipeline:
    return Pipeline(
        [
            Node(lambda given: given, "given", "result", name="write_result"),
            Node(lambda result: result, "result", "model@json", name="write_model"),
        ]
    )


def _pin(catalog: DataCatalog, run_id: str, load_versions: dict[str, str] | None = None) -> None:
    RunVersionsHook().before_pipeline_run(
        run_params={"run_id": run_id, "load_versions": load_versions or {}}, pipeline=_writer(), catalog=catalog
    )


def test_a_run_loads_its_own_save_not_a_newer_one_of_a_concurrent_run(tmp_path):
    first, second = _catalog(tmp_path, EARLIER), _catalog(tmp_path, LATER)
    _pin(first, EARLIER)
    _pin(second, LATER)
    first.save("result", {"run": "first"})
    second.save("result", {"run": "second"})  # the later run saves first... or last: either way a newer version
    first.save("model@json", {"run": "first"})
    second.save("model@json", {"run": "second"})

    assert first.load("result") == {"run": "first"}
    assert first.load("model@json") == {"run": "first"}
    assert first.load("model@again") == {"run": "first"}  # a transcoded view of the written dataset
    assert second.load("result") == {"run": "second"}
    # without the hook, Kedro loads the newest version: the other run's
    assert _catalog(tmp_path, EARLIER).load("result") == {"run": "second"}


def test_datasets_the_run_only_reads_and_user_pins_keep_kedros_rules(tmp_path):
    for version, value in ((EARLIER, "old"), (LATER, "new")):
        _catalog(tmp_path, version).save("given", {"value": value})
        _catalog(tmp_path, version).save("result", {"value": value})
    run = "2026-12-07T07.00.00.000Z"
    catalog = _catalog(tmp_path, run)
    _pin(catalog, run)
    assert catalog.load("given") == {"value": "new"}  # an input: its newest version

    pinned = _catalog(tmp_path, run, load_versions={"result": EARLIER})
    _pin(pinned, run, load_versions={"result": EARLIER})
    assert pinned.load("result") == {"value": "old"}  # --load-versions wins over the run's own version


def test_only_missing_outputs_runs_keep_the_newest_version(tmp_path):
    _catalog(tmp_path, EARLIER).save("result", {"value": "saved"})
    catalog = _catalog(tmp_path, LATER)
    RunVersionsHook().before_pipeline_run(
        run_params={"run_id": LATER, "load_versions": {}, "only_missing_outputs": True},
        pipeline=_writer(),
        catalog=catalog,
    )
    assert catalog.load("result") == {"value": "saved"}  # its node is skipped: nothing of this run to read


def test_a_failed_run_says_which_of_its_versions_are_now_the_latest(tmp_path, caplog):
    import logging

    catalog, hook = _catalog(tmp_path, LATER), RunVersionsHook()
    hook.before_pipeline_run(run_params={"run_id": LATER, "load_versions": {}}, pipeline=_writer(), catalog=catalog)
    catalog.save("result", {"run": "failing"})
    hook.after_dataset_saved(dataset_name="result")
    with caplog.at_level(logging.ERROR, logger="flat_pipeline.hooks.run_versions"):
        hook.on_pipeline_error(error=RuntimeError("the MLflow artifact store is read-only"))
    assert (
        f"this run failed (RuntimeError) after saving result ({LATER}): these are now the latest versions, which later "
        "runs load. Run it again, or load the previous ones with --load-versions=<dataset>:<version>."
    ) in caplog.messages


def test_unversioned_outputs_stay_unversioned(tmp_path):
    """A dataset class that can version (kedro-mlflow's artifact datasets subclass the one they wrap) but is not
    versioned is left alone: pinning it would make it versioned and refuse to save over its existing file."""
    plain = {"type": "json.JSONDataset", "filepath": str(tmp_path / "plain.json")}
    catalog = DataCatalog.from_config({"result": plain, "given": plain})
    catalog.save("result", {"run": "earlier"})
    writer = Pipeline([Node(lambda given: given, "given", "result", name="write_result")])
    RunVersionsHook().before_pipeline_run(run_params={"run_id": LATER, "load_versions": {}}, pipeline=writer,
                                          catalog=catalog)  # fmt: skip
    catalog.save("result", {"run": "this one"})
    assert (tmp_path / "plain.json").is_file() and catalog.load("result") == {"run": "this one"}


def test_inputs_are_read_at_the_version_that_was_newest_when_the_run_started(tmp_path):
    _catalog(tmp_path, EARLIER).save("given", {"value": "at start"})
    run = _catalog(tmp_path, LATER)
    _pin(run, LATER)
    _catalog(tmp_path, "2026-12-07T06.00.09.000Z").save("given", {"value": "a concurrent run's, later"})
    assert run.load("given") == {"value": "at start"}
