"""A number back to the run that made it, and that run made again: what an MLflow run ran (environment, pipelines,
runtime parameters, the `kedro run` filters, the input versions it loaded, the code's commit), read from its tags
(hooks/run_tags.py), and the metrics of a re-run compared with the original's, value by value.

`kedro reproduce <run id>` (flat_pipeline.cli) runs it. A benchmark method's child run is reproduced by running that
method's namespace alone (`benchmark_worker --namespaces <method>`) with the inputs its run read; a tune trial by
running that trial alone again (`tune_worker` with `tune.replay`), with the settings it drew, outside its study.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from mlflow import MlflowClient

from flat_pipeline.benchmark_runs import PARENT_TAG
from flat_pipeline.run_record import DIFF_TAG, GIT_COMMIT_TAG, RUN_FILTERS_TAG

REPRODUCES_TAG = "reproduces"
# metrics that time the run, not its results: listed, never compared
TIMINGS = ("seconds", "runtime", "per_second")


class ReproduceError(RuntimeError):
    """The run cannot be reproduced here as asked; the message says why and what to do."""


@dataclass
class Recipe:
    """What a run ran, enough to run it again."""

    run_id: str
    env: str
    pipelines: list[str]
    runtime_params: dict[str, Any]
    filters: dict[str, Any]  # namespaces, node_names, ... as `KedroSession.run` takes them
    load_versions: dict[str, str]  # every input the run read but did not write -> the version it read
    commit: str | None
    diff_sha256: str | None
    child_tags: dict[str, str] = field(default_factory=dict)  # a child run (method, trial): its tags in the re-run
    metrics: dict[str, list[float]] = field(default_factory=dict)  # every metric's history, in step order


def recipe_of(run_id: str, client: MlflowClient | None = None) -> Recipe:
    """The recipe of MLflow run `run_id` (a `kedro run`'s run, or a benchmark method's child run)."""
    client = client or MlflowClient()
    try:
        run = client.get_run(run_id)
    except Exception as error:  # noqa: BLE001  MLflow raises its own error for an unknown id
        raise ReproduceError(f"no MLflow run {run_id} in {client.tracking_uri}: {error}") from None
    tags = run.data.tags
    parent = client.get_run(tags[PARENT_TAG]) if PARENT_TAG in tags else None
    trial = "tune_phase" in tags and parent is not None
    method = tags.get("benchmark_method") if parent is not None else None
    top = parent if method else run
    if "kedro_env" not in top.data.tags:
        raise ReproduceError(f"run {run_id} was not made by `kedro run` of this project (no kedro_env tag)")
    runtime_params = json.loads(top.data.tags.get("runtime_params") or "{}")
    if trial:  # the worker's run, with that one trial replayed
        pipelines, filters = ["tune_worker"], {}
        replay = {"method": method, "phase": tags["tune_phase"], "trial": int(tags["tune_trial"])}
        runtime_params = {**runtime_params, "tune": {**(runtime_params.get("tune") or {}), "replay": replay}}
        child_tags = {"benchmark_method": method, "tune_phase": tags["tune_phase"], "tune_trial": tags["tune_trial"]}
    elif method:
        pipelines, filters, child_tags = ["benchmark_worker"], {"namespaces": [method]}, {"benchmark_method": method}
    else:
        pipelines = top.data.tags.get("kedro_pipelines", "__default__").split(",")
        filters, child_tags = json.loads(top.data.tags.get(RUN_FILTERS_TAG) or "{}"), {}
        filters.pop("load_versions", None)  # pinned below with every other input
    return Recipe(
        run_id=run_id,
        env=top.data.tags["kedro_env"],
        pipelines=pipelines,
        runtime_params=runtime_params,
        filters=filters,
        load_versions=input_versions([r.data.tags for r in ([run, parent] if method else [run])]),
        commit=top.data.tags.get(GIT_COMMIT_TAG),
        diff_sha256=top.data.tags.get(DIFF_TAG),
        child_tags=child_tags,
        metrics=metric_histories(client, run_id, run.data.metrics),
    )


def input_versions(tag_sets: list[dict[str, str]]) -> dict[str, str]:
    """Dataset -> version of everything the runs loaded (`loaded/<dataset>` = `<...>/<version>/<file>`) but none of
    them saved: their inputs."""
    saved = {key.removeprefix("saved/") for tags in tag_sets for key in tags if key.startswith("saved/")}
    return {
        key.removeprefix("loaded/"): PurePath(path).parts[-2]
        for tags in tag_sets
        for key, path in tags.items()
        if key.startswith("loaded/") and key.removeprefix("loaded/") not in saved
    }


def metric_histories(client: MlflowClient, run_id: str, latest: dict[str, float]) -> dict[str, list[float]]:
    return {
        key: [m.value for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))]
        for key in sorted(latest)
    }


def source_problem(recipe: Recipe, commit: str | None, diff_sha256: str | None) -> str | None:
    """How this checkout's code differs from the run's (None: the same commit, and the same uncommitted changes)."""
    if recipe.commit is None:
        return None if commit is None else f"the run recorded no commit; this checkout is at {commit}"
    if commit != recipe.commit:
        return f"the run was made at commit {recipe.commit}, this checkout is at {commit}"
    if recipe.commit.endswith("-dirty") and recipe.diff_sha256 != diff_sha256:
        return (f"the run and this checkout are both at {commit} with uncommitted changes, but not the same ones "
                f"(diff sha256 {recipe.diff_sha256} against {diff_sha256})")  # fmt: skip
    return None


@dataclass
class Comparison:
    rows: list[tuple[str, str, str, str]]  # metric, original, reproduced, largest absolute difference
    largest: float  # over every compared value (0.0: identical)
    missing: list[str]  # metrics of the original that the re-run lacks
    timings: list[str]  # not compared

    @property
    def identical(self) -> bool:
        return self.largest == 0.0 and not self.missing

    def markdown(self, original: str, reproduced: str) -> str:
        lines = [f"Run {reproduced} reproduces run {original}: "
                 + ("every metric identical" if self.identical else f"largest difference {self.largest:.3g}"
                    + (f", {len(self.missing)} metrics missing" if self.missing else "")),  # fmt: skip
                 "", "| metric | original | reproduced | largest abs diff |", "|---|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {a} | {b} | {d} |" for name, a, b, d in self.rows]
        if self.timings:
            lines += ["", f"Timings, not compared: {', '.join(self.timings)}"]
        return "\n".join(lines) + "\n"


def compare(original: dict[str, list[float]], reproduced: dict[str, list[float]]) -> Comparison:
    """Every metric of the original against the re-run's, over its whole history (step by step)."""
    rows, largest, missing, timings = [], 0.0, [], []
    for name, values in sorted(original.items()):
        if any(name.endswith(t) or f"/{t}" in name for t in TIMINGS):
            timings.append(name)
            continue
        again = reproduced.get(name)
        if again is None:
            missing.append(name)
            rows.append((name, _show(values), "missing", "-"))
            continue
        if len(again) != len(values):
            difference = math.inf
        else:
            difference = max((_difference(a, b) for a, b in zip(values, again, strict=True)), default=0.0)
        largest = max(largest, difference)
        rows.append((name, _show(values), _show(again), f"{difference:.3g}"))
    return Comparison(rows, largest, missing, timings)


def _difference(a: float, b: float) -> float:
    if math.isnan(a) and math.isnan(b) or a == b:
        return 0.0
    return abs(a - b)


def _show(values: list[float]) -> str:
    last = f"{values[-1]:.10g}" if values else "-"
    return last if len(values) <= 1 else f"{last} ({len(values)} steps)"
