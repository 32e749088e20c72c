"""What a run is, on the MLflow run itself: a name that says what ran, tags to filter and group by, the catalog
versions it loaded and saved with the sha256 of each input, what produced it (packages, hardware, numerics:
flat_pipeline.run_record), and (behind `tracking.log_unlearned_model`) the unlearned model as an MLflow model.

kedro-mlflow opens the run in its `before_pipeline_run`; this hook's wraps it (as RunStatusHook's does) and names
and tags the run once it is open. Dataset versions are tagged on the run that is active when the dataset is loaded
or saved: a benchmark method's own child run for its models (hooks/method_runs.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset
from kedro.pipeline.node import Node

from flat_pipeline.run_record import (
    DIFF_TAG,
    GIT_COMMIT_TAG,
    RUN_FILTERS_TAG,
    SHA256_PREFIX,
    artifact_sha256,
    record_tags,
)
from flat_pipeline.training.tracking import method_label

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "mlflow.runName"
RUN_FILTERS = ("namespaces", "node_names", "tags", "from_nodes", "to_nodes", "from_inputs", "to_outputs",
               "load_versions", "only_missing_outputs")  # fmt: skip
MODEL_ARTIFACT = "unlearned_model"


def run_name(pipelines: list[str] | None, params: Mapping[str, Any], env: str) -> str:
    """`unlearn flat-kl @tofu`, `evaluate @base`, `__default__ flat-kl @base`: what ran, and where."""
    names = pipelines or ["__default__"]
    runs_unlearning = any(name in ("unlearn", "__default__") for name in names)
    method = f" {method_label(params.get('unlearn') or {})}" if runs_unlearning else ""
    return f"{','.join(names)}{method} @{env}"


def run_tags(run_params: Mapping[str, Any], params: Mapping[str, Any], env: str) -> dict[str, str]:
    """The tags every run carries (values as strings; MLflow keeps at most 5000 characters of a tag)."""
    model = params.get("model") or {}
    data_prep = params.get("data_prep") or {}
    unlearn = params.get("unlearn") or {}
    tags = {
        "kedro_pipelines": ",".join(run_params.get("pipeline_names") or ["__default__"]),
        "method": method_label(unlearn),
        "benchmark_source": str(data_prep.get("source")),
        "forget_split": str(data_prep.get("forget_split")),
        "model": str(model.get("name_or_path") or model.get("source")),
        "seed": str(unlearn.get("seed")),
        "command": shlex.join(sys.argv),
        "runtime_params": json.dumps(run_params.get("runtime_params") or {}, sort_keys=True, default=str),
        # what `kedro run` selected beyond the pipelines, for `kedro reproduce`
        RUN_FILTERS_TAG: json.dumps(
            {key: run_params.get(key) for key in RUN_FILTERS if run_params.get(key)}, sort_keys=True, default=str
        ),  # fmt: skip
    }
    folder = Path(run_params.get("project_path") or ".")
    commit = git_commit(folder)
    if commit:
        tags[GIT_COMMIT_TAG] = commit
        if commit.endswith("-dirty"):  # which uncommitted changes: two dirty runs of one commit can differ
            tags[DIFF_TAG] = git_diff_sha256(folder) or "unknown"
    return {key: value[:5000] for key, value in tags.items()}


def git_diff_sha256(folder: Path) -> str | None:
    """sha256 of the tracked files' changes against the commit (`git diff HEAD`)."""
    try:
        diff = subprocess.run(["git", "diff", "HEAD", "--binary"], cwd=folder, capture_output=True, check=True,
                              timeout=30).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return hashlib.sha256(diff).hexdigest()


def git_commit(folder: Path) -> str | None:
    """The checked-out commit, with `-dirty` when tracked files differ from it; None outside a git repository."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(
            status, cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


class RunTagsHook:
    """Names and tags the run, tags the catalog versions it loads and saves, logs the unlearned model if asked."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._params: dict[str, Any] = {}
        self._hashed: set[str] = set()

    @hook_impl(hookwrapper=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> Generator[None]:
        result = yield  # kedro-mlflow has opened the run
        self._catalog = catalog
        self._params = catalog.load("parameters")
        env = run_params.get("env") or "local"
        self._hashed = set()
        if mlflow.active_run() is not None:
            mlflow.set_tags({RUN_NAME_TAG: run_name(run_params.get("pipeline_names"), self._params, env)})
            mlflow.set_tags(run_tags(run_params, self._params, env))
            mlflow.set_tags(record_tags(self._params.get("model") or {}))
        return result

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node: Node) -> None:
        path = self._tag_version("loaded", dataset_name)
        name = dataset_name.split("@", 1)[0]
        if path is not None and name not in self._hashed and Path(path).exists():
            self._hashed.add(name)  # the active run's input, once per run (a child run's inputs on the child)
            mlflow.set_tag(f"{SHA256_PREFIX}{name}", artifact_sha256(Path(path)))

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        path = self._tag_version("saved", dataset_name)
        if path is not None and dataset_name.endswith("unlearned_model") and self._logs_models():
            log_model(data, path)

    @hook_impl
    def after_pipeline_run(self) -> None:
        self._catalog = None  # the catalog holds the run's models

    @hook_impl
    def on_pipeline_error(self) -> None:
        self._catalog = None

    def _logs_models(self) -> bool:
        return bool((self._params.get("tracking") or {}).get("log_unlearned_model"))

    def _tag_version(self, action: str, dataset_name: str) -> str | None:
        """Tag `<action>/<dataset>` = the version folder or file it used, on the active run; the path, if versioned."""
        if self._catalog is None or mlflow.active_run() is None:
            return None
        dataset = self._catalog.get(dataset_name)
        if not isinstance(dataset, AbstractVersionedDataset) or dataset._version is None:
            return None
        try:  # the version Kedro resolved for this load or save (cached by the dataset; no existence check)
            version = dataset.resolve_load_version() if action == "loaded" else dataset.resolve_save_version()
            path = str(dataset._get_versioned_path(version))
        except Exception as error:  # noqa: BLE001  (bookkeeping must never fail a run)
            logger.debug("no version path for %s: %s", dataset_name, error)
            return None
        # one tag per dataset: its transcoded views (base_model@model, base_model@folder) are one set of versions, and
        # MLflow refuses "@" in a tag name
        mlflow.set_tag(f"{action}/{dataset_name.split('@', 1)[0]}", path[:5000])
        return path


def log_model(bundle: Any, path: str) -> None:
    """The unlearned model as an MLflow model (transformers flavor, text generation) in the active run, ready for
    `mlflow.register_model`."""
    quiet = logging.getLogger("mlflow.transformers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # it warns that a local folder has no hub model card and no licence
    try:
        mlflow.transformers.log_model(
            transformers_model={"model": bundle.model, "tokenizer": bundle.tokenizer},
            name=MODEL_ARTIFACT,
            task="text-generation",
            pip_requirements=["transformers", "torch"],  # not inferred: that imports and times the whole environment
        )
    finally:
        quiet.setLevel(level)
    logger.info("logged the unlearned model (%s) to the MLflow run as '%s'", path, MODEL_ARTIFACT)
