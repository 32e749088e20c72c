"""Checks that run before any node, so that a bad run stops in seconds with nothing written and no MLflow run opened:
the environment keeps state of its own, every parameter is known and in range, and every saved input the run loads
but does not make exists."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset
from kedro.pipeline import Pipeline

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
            *trajectory_problems(params, pipeline),
        ]
        check_parameters(params, also=also)
        check_saved_inputs(pipeline, catalog, env)


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
    seen: dict[tuple[str, Any], str] = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "local"):
        for key, value in _globals(folder).items():
            if key in STATE_GLOBALS:
                other = seen.setdefault((key, value), folder.name)
                if other != folder.name:
                    raise PreflightError(
                        f"environments '{other}' and '{folder.name}' share {key} {value!r} "
                        f"({conf / folder.name / 'globals.yml'}); give each its own. Nothing was run."
                    )


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
