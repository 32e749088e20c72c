"""Checks that run before any node, so that a bad run stops in seconds with nothing written and no MLflow run opened:
the environment keeps state of its own, every parameter is known and in range, every saved input the run loads but
does not make exists, the original and retain models it reads together come from one finetune run, and every local
folder it writes to (and the MLflow store) can be written."""

from __future__ import annotations

import importlib
import os
import pkgutil
import tempfile
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset
from kedro.pipeline import Pipeline

from flat_pipeline.io import ModelFolderDataset
from flat_pipeline.parameters import check_parameters

# Environments that keep base's state: base itself and `local`, the personal overlay `kedro run` uses by default.
SHARED_STATE_ENVS = ("base", "local")
STATE_GLOBALS = ("data_root", "mlflow_experiment")


class PreflightError(RuntimeError):
    """A run cannot start; the message says what is missing or wrong and how to fix it. Nothing was run."""


class PreflightHook:
    """Refuses a run before its first node (and before kedro-mlflow opens an MLflow run: `tryfirst`)."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        from kedro.framework.project import settings

        env = run_params.get("env") or settings.CONFIG_LOADER_ARGS.get("default_run_env", "local")
        conf = Path(run_params["project_path"]) / settings.CONF_SOURCE
        check_environment_state(conf, env)
        params = catalog.load("parameters")
        also = [
            *benchmark_method_problems(params),
            *template_file_problems(params, pipeline),
            *template_model_problems(params, pipeline, catalog),
            *trajectory_problems(params, pipeline),
        ]
        check_parameters(params, also=also)
        check_saved_inputs(pipeline, catalog, env)
        check_model_pair(pipeline, catalog, run_params.get("load_versions") or {}, env)
        check_writable(pipeline, catalog)
        check_tune_storage(pipeline, params)


def check_environment_state(conf: Path, env: str) -> None:
    """An environment other than base / local must name its own data root and MLflow experiment, and no two
    environments may share one: otherwise "latest" would mix their artifacts and runs."""
    if env not in SHARED_STATE_ENVS:
        own = _globals(conf / env)
        missing = [key for key in STATE_GLOBALS if key not in own]
        if missing:
            raise PreflightError(
                f"environment '{env}' keeps no state of its own: {conf / env / 'globals.yml'} must set "
                f"{' and '.join(missing)} (e.g. data_root: data/{env}, mlflow_experiment: flat_pipeline_{env}), so "
                f"that its artifacts and MLflow runs never mix with another environment's. Nothing was run."
            )
    base = _globals(conf / "base")
    seen: dict[tuple[str, Any], str] = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir()):
        for key, value in _globals(folder).items():
            if key not in STATE_GLOBALS:
                continue
            if folder.name == "local" and _same(key, value, base.get(key)):
                continue  # local keeps base's state, as `kedro run` does by default
            other = seen.setdefault((key, _same_key(key, value)), folder.name)
            if other != folder.name:
                raise PreflightError(
                    f"environments '{other}' and '{folder.name}' share {key} {value!r} "
                    f"({conf / folder.name / 'globals.yml'}); give each its own. Nothing was run."
                )


def _same_key(key: str, value: Any) -> Any:
    """A data root as the folder it names (`data/tofu/` and `./data/tofu` are one)."""
    return os.path.normpath(str(value)) if key == "data_root" and isinstance(value, str) else value


def _same(key: str, value: Any, other: Any) -> bool:
    return _same_key(key, value) == _same_key(key, other)


def _globals(folder: Path) -> dict[str, Any]:
    file = folder / "globals.yml"
    return (yaml.safe_load(file.read_text()) or {}) if file.is_file() else {}


def template_file_problems(params: dict[str, Any], pipeline: Pipeline) -> list[str]:
    """A run that makes template answers from a file needs the file (other runs of the environment do not)."""
    from flat_pipeline.templates import check_template_options

    if not any("params:templates" in node.inputs for node in pipeline.nodes):
        return []
    try:
        check_template_options(params.get("templates") or {})
    except FileNotFoundError as error:
        return [str(error)]
    except ValueError:  # a bad setting: the parameter check names it
        pass
    return []


def template_model_problems(params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> list[str]:
    """Templates generated by the base model (`templates.generated.model: null`) need a saved base model, or the run
    must make one (the finetune pipeline's prepare_base_model_node)."""
    from flat_pipeline.pipelines.finetune.pipeline import BASE_MODEL
    from flat_pipeline.pipelines.templates.pipeline import BASE_MODEL_FOLDER

    templates = params.get("templates") or {}
    if templates.get("source") != "generated" or (templates.get("generated") or {}).get("model"):
        return []
    readers = [node for node in pipeline.nodes if BASE_MODEL_FOLDER in node.inputs]
    if not readers or BASE_MODEL_FOLDER in pipeline.all_outputs() or BASE_MODEL in pipeline.all_outputs():
        return []
    dataset = catalog.get(BASE_MODEL_FOLDER)
    if dataset is not None and dataset.exists():
        return []
    return [
        "parameter templates.generated.model: null generates the templates with the run's base model, and no "
        "base_model is saved in this environment yet: run `kedro run --pipelines finetune` first (or the whole default "
        "run), or name a model folder"
    ]


def trajectory_problems(params: dict[str, Any], pipeline: Pipeline) -> list[str]:
    """Trajectory metrics that compare with the retain reference (forget_quality, privleak) need an unlearning that
    reads it: the benchmark's does, the unlearn pipeline's does not (it runs without any retain model's evaluation)."""
    from flat_pipeline.parameters import unlearn_config

    if not any(node.name == "unlearn_model_node" and "retain_reference" not in node.inputs for node in pipeline.nodes):
        return []
    try:
        trajectory = unlearn_config(params.get("unlearn") or {}, params).trajectory_settings
    except (ValueError, TypeError):  # a bad setting: the parameter check names it
        return []
    needing = trajectory.reference_metrics if trajectory.enabled else []
    if not needing:
        return []
    return [
        f"parameter unlearn.trajectory.metrics: {needing} compare with the retain model's numbers (retain_reference), "
        f"which only the benchmark's unlearning reads (`kedro run --pipelines benchmark`); in the unlearn pipeline "
        f"trace what they are computed from (forget_truth_ratio, mia_min_k) or drop them"
    ]


def benchmark_method_problems(params: dict[str, Any]) -> list[str]:
    """`benchmark.methods` must hold an entry for every method of the benchmark pipeline and nothing else, and the
    leaderboard must sort by one of its columns."""
    from flat_pipeline.pipelines.benchmark.nodes import COLUMNS
    from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS

    benchmark = params.get("benchmark")
    if not isinstance(benchmark, dict):
        return []
    problems = []
    methods = benchmark.get("methods") or {}
    missing = [name for name in BENCHMARK_METHODS if name not in methods]
    extra = [name for name in methods if name not in BENCHMARK_METHODS]
    if missing:
        problems.append(f"parameter benchmark.methods: no entry for method(s) {missing} of the benchmark pipeline")
    if extra:
        problems.append(
            f"parameter benchmark.methods: {extra} not in the benchmark pipeline, which runs "
            f"{', '.join(BENCHMARK_METHODS)} (flat_pipeline.pipelines.benchmark.pipeline.BENCHMARK_METHODS)"
        )
    board = benchmark.get("leaderboard") or {}
    columns = list(board.get("columns") or COLUMNS)
    sort_by = board.get("sort_by", "forget_quality")
    if sort_by not in columns:
        problems.append(
            f"parameter benchmark.leaderboard.sort_by: expected one of the columns {columns}, got {sort_by!r}"
        )
    return problems


def check_saved_inputs(pipeline: Pipeline, catalog: Any, env: str) -> None:
    """Every versioned dataset the run loads but does not make has a saved version (the pinned one, with
    `--load-versions`); otherwise name it, where it was looked for and the pipeline that makes it."""
    missing = []
    for name in sorted(pipeline.inputs()):
        if name == "parameters" or name.startswith("params:"):
            continue
        dataset = catalog.get(name)
        if isinstance(dataset, ModelFolderDataset):  # optional: its reader says when it needs one (see above)
            continue
        if isinstance(dataset, AbstractVersionedDataset) and dataset._version is not None and not dataset.exists():
            pinned = f"version {dataset._version.load} " if dataset._version.load else ""  # --load-versions
            if getattr(dataset, "missing_ok", False) and not pinned and _read_optionally(name, pipeline):
                continue
            missing.append(f"  - {name} ({pinned}in {dataset._filepath}): {_made_by(name, env)}")
    if missing:
        raise PreflightError(
            f"this run loads {len(missing)} dataset(s) that no earlier run of environment '{env}' saved; nothing "
            f"was run:\n" + "\n".join(missing)
        )


def check_model_pair(pipeline: Pipeline, catalog: Any, load_versions: dict[str, str], env: str) -> None:
    """A run that reads both the original model (to unlearn or evaluate it) and the retain model (or the retain
    reference made from it) reads a pair from one finetune run: the same version, as one run saves both. Otherwise
    (a finetune killed between the two, or one role trained again alone) unlearning and forget_quality would compare
    models of different recipes or data. Pinning either with --load-versions says the pair is meant."""
    inputs = pipeline.inputs()
    if "original_model" not in inputs or {"original_model", "retain_model"} & set(load_versions):
        return
    original = _saved_version(catalog, "original_model")
    if "retain_model" in inputs:
        retain, source = _saved_version(catalog, "retain_model"), "retain_model"
    elif "retain_reference" in inputs and (reference := _loaded_if_saved(catalog, "retain_reference")):
        # a version of this environment's retain_model (`<filepath>/<version>/<name>`); a reference from elsewhere (an
        # imported open-unlearning log, a model outside the catalog) says nothing of finetune runs
        folder, catalog_retain = Path(str(reference.get("retain_model", ""))), catalog.get("retain_model")
        own = getattr(catalog_retain, "_filepath", None)
        if own is None or not (folder.name == folder.parent.parent.name == Path(str(own)).name):
            return  # (compared by names, not whole paths: a project may have moved since)
        retain, source = folder.parent.name, "retain_reference's retain_model"
    else:
        return
    if original and retain and original != retain:
        flag = "" if env == "local" else f" --env {env}"
        raise PreflightError(
            f"original_model version {original} and {source} version {retain} come from different finetune runs "
            f"(one run saves both under one version): unlearning or evaluating them together would compare models of "
            f"different recipes or data. Run `kedro run{flag} --pipelines finetune` again (then the evaluations); or "
            f"take the original model of that retain model's run, --load-versions=original_model:{retain}; or say "
            f"this pair is meant, --load-versions=original_model:{original}. Nothing was run."
        )


def _saved_version(catalog: Any, name: str) -> str | None:
    dataset = catalog.get(name)
    if not isinstance(dataset, AbstractVersionedDataset) or dataset._version is None or not dataset.exists():
        return None
    return dataset.resolve_load_version()


def _loaded_if_saved(catalog: Any, name: str) -> dict[str, Any] | None:
    dataset = catalog.get(name)
    return dataset.load() if dataset is not None and dataset.exists() else None


def check_writable(pipeline: Pipeline, catalog: Any, tracking_uri: str | None = None) -> None:
    """Every local folder the run will write, checked by writing (and removing) a probe file before the first node:
    the folders of the datasets the pipeline saves, and the MLflow store's (tracking URI, `tracking_uri` or the active
    one). Otherwise a read-only folder fails the run after the training, the work lost."""
    where: dict[Path, list[str]] = {}
    for name in sorted(pipeline.all_outputs()):
        dataset = catalog.get(name)
        filepath = getattr(dataset, "_filepath", None)
        if filepath is not None and getattr(dataset, "_protocol", "file") in ("file", "local"):
            where.setdefault(Path(str(filepath)), []).append(name)
    for folder in mlflow_folders(tracking_uri):
        where.setdefault(folder, []).append("the MLflow store")
    problems = [f"  - {', '.join(names)}: {problem}" for path, names in where.items() if (problem := unwritable(path))]
    if problems:
        raise PreflightError(
            f"this run cannot write {len(problems)} of its destinations; nothing was run:\n" + "\n".join(problems)
        )


def check_tune_storage(pipeline: Pipeline, params: dict[str, Any]) -> None:
    """A run of tune's halves opens `tune.storage` first: a database server that cannot be reached, a driver that is
    not installed or a broken journal stops it here, with the URL (no password), not after the models load."""
    from flat_pipeline.tuning.study import StorageError, open_storage

    if "params:tune" not in pipeline.all_inputs():
        return
    try:
        open_storage(str((params.get("tune") or {}).get("storage")))
    except StorageError as error:
        raise PreflightError(f"{error}; nothing was run") from None


def mlflow_folders(tracking_uri: str | None = None) -> list[Path]:
    """The local folders MLflow writes to: the sqlite database's or the file store's, and `mlruns` (the default
    artifact root beside a database); none for a server (it checks its own)."""
    from urllib.parse import urlparse

    import mlflow

    uri = tracking_uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///"))
        return [database, Path.cwd() / "mlruns"]
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return [Path(parsed.path if parsed.scheme else uri)]
    return []


def unwritable(path: Path) -> str | None:
    """Why `path` (a file or folder to be written, existing or not) cannot be written, or None: a probe file is
    created and removed in it (in its nearest existing folder if it does not exist yet)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_file():
        if existing != path:
            return f"{path}: {existing} is a file, not a folder"
        if not os.access(existing, os.W_OK):
            return f"{path} is read-only"
        existing = existing.parent  # a file to be rewritten (MLflow's database): its folder too (journal files)
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        return f"{path}: {existing} is not writable ({error.strerror})"
    return None


def _read_optionally(dataset: str, pipeline: Pipeline) -> bool:
    """Whether every node of `pipeline` that reads `dataset` works without it (an evaluation without the retain
    reference)."""
    from flat_pipeline.pipelines.evaluate.pipeline import REFERENCE_OPTIONAL_NODES

    return all(node.name in REFERENCE_OPTIONAL_NODES for node in pipeline.nodes if dataset in node.inputs)


def _made_by(dataset: str, env: str) -> str:
    from flat_pipeline.pipeline_registry import ON_REQUEST

    pipelines = _every_pipeline()
    makers = sorted(  # the default run's own pipelines first, then the smallest
        (name for name, pipeline in pipelines.items() if dataset in pipeline.all_outputs()),
        key=lambda name: (name in ON_REQUEST, len(pipelines[name].nodes)),
    )
    if not makers:
        return "no pipeline of this project makes it"
    flag = "" if env == "local" else f" --env {env}"
    others = f" (or pipeline {', '.join(makers[1:])})" if len(makers) > 1 else ""
    return f"made by `kedro run{flag} --pipelines {makers[0]}`{others}"


def _every_pipeline() -> dict[str, Pipeline]:
    """Every pipeline package of the project by name (Kedro's registry holds only the pipelines a session runs)."""
    import flat_pipeline.pipelines as package

    return {
        module.name: importlib.import_module(f"{package.__name__}.{module.name}").create_pipeline()
        for module in pkgutil.iter_modules(package.__path__)
        if module.ispkg
    }
