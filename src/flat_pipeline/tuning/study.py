"""Tuning every method by one rule with Optuna: the studies, the worker loop and what the storage holds.

Per method two studies live in one Optuna storage (`tune.storage`): `<study_name>.<method>` holds the search
(`n_trials` trials drawn from the method's space) and `<study_name>.<method>.seeds` the re-runs of its best setting
with each of `seeds`. Any number of workers (processes, GPUs, machines) running `run_worker` on the same storage
share them: a trial's number is given by the storage, a worker runs only numbers below the budget, so together they
finish exactly `n_trials` (and one re-run per seed), none twice. A worker searches every method first, then runs
the seeds, waiting for the searches other workers still run.

Storage: a path is an Optuna journal file (the default, `<data_root>/06_models/tune/optuna.journal`; on a shared
filesystem, a cluster's workers can use it too); a URL (`sqlite:///...`, `postgresql://...`, `mysql://...`) an RDB.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import InitVar, asdict, dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

from flat_pipeline.config import ParameterError, check_number, config_from_params
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.training.guards import WRECKED_SAMPLE_ROWS, check_not_wrecked
from flat_pipeline.training.tracking import flatten, method_label
from flat_pipeline.training.unlearn import UnlearnConfig, tokenize_retain, unlearn
from flat_pipeline.tuning.rule import SelectionRule
from flat_pipeline.tuning.space import Dimension, corner_settings, method_space

logger = logging.getLogger(__name__)

SEARCH, SEEDS = "search", "seed"
# Finished trials: those a worker will not run again.
_DONE_STATES = ("COMPLETE", "FAIL", "PRUNED")


@dataclass
class TuneConfig:
    """The `tune` parameter block (conf/base/parameters_tune.yml)."""

    storage: str  # a journal file path, or an RDB URL
    study_name: str = "tune"
    methods: list[str] | None = None  # None: every method of benchmark.methods
    n_trials: int = 8  # search trials per method, all workers together
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # the best setting re-run with each unlearn.seed
    metrics: list[str] | None = None  # evaluated per trial; None: the leaderboard's columns and the rule's metrics
    num_threads: int | None = None  # torch threads of this worker; None: torch's default
    worker: int = 0  # this worker's index: offsets the sampler's seed, so that workers draw different settings
    sampler: Mapping[str, Any] = field(default_factory=lambda: {"seed": 0, "n_startup_trials": 4})
    rule: Mapping[str, Any] | None = None  # flat_pipeline.tuning.rule.SelectionRule
    space: Mapping[str, Any] = field(default_factory=dict)  # flat_pipeline.tuning.space
    keep_models: str | None = None  # a folder: every trial's model is saved there (<method>/<phase>_<number>)
    wait_s: float = 86400.0  # how long the seed phase waits for searches other workers still run
    block: InitVar[str] = "tune"

    def __post_init__(self, block: str) -> None:
        if not isinstance(self.storage, str) or not self.storage:
            raise ParameterError(
                f"parameter {block}.storage: expected a journal file path or an RDB URL, got {self.storage!r}"
            )
        check_number(f"{block}.n_trials", self.n_trials, minimum=1, integer=True)
        if not isinstance(self.seeds, list | tuple) or not all(isinstance(s, int) for s in self.seeds):
            raise ParameterError(f"parameter {block}.seeds: expected a list of integers, got {self.seeds!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ParameterError(f"parameter {block}.seeds: a seed is repeated in {self.seeds}")
        check_number(f"{block}.num_threads", self.num_threads, minimum=1, integer=True, optional=True)
        check_number(f"{block}.worker", self.worker, minimum=0, integer=True)
        check_number(f"{block}.wait_s", self.wait_s, minimum=0)
        sampler_keys = {"seed", "n_startup_trials"}
        if not isinstance(self.sampler, Mapping) or set(self.sampler) - sampler_keys:
            raise ParameterError(
                f"parameter {block}.sampler: expected keys {sorted(sampler_keys)}, got {self.sampler!r}"
            )
        check_number(f"{block}.sampler.seed", self.sampler.get("seed"), minimum=0, integer=True, optional=True)
        check_number(
            f"{block}.sampler.n_startup_trials", self.sampler.get("n_startup_trials", 4), minimum=0, integer=True
        )
        self.selection = SelectionRule.from_params(self.rule)
        if not isinstance(self.space, Mapping):
            raise ParameterError(f"parameter {block}.space: expected shared and methods blocks, got {self.space!r}")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TuneConfig:
        return config_from_params(cls, params, "tune")

    def dimensions(self, method: str) -> dict[str, Dimension]:
        return method_space(self.space, method, {f.name for f in fields(UnlearnConfig)} - {"block"})

    def trial_metrics(self, leaderboard_columns: Sequence[str]) -> list[str]:
        """What each trial evaluates: `metrics`, or the leaderboard's columns; the rule's metrics always."""
        chosen = list(self.metrics) if self.metrics is not None else list(leaderboard_columns)
        return list(dict.fromkeys([*chosen, *self.selection.metrics]))


@dataclass
class TrialData:
    """What every trial unlearns from and is evaluated with (the same for every method)."""

    start: ModelBundle  # the original model: each trial trains a copy of it
    forget_templates: Any
    retain_rows: Any
    prompt: PromptFormat
    evaluate: Callable[[ModelBundle], dict[str, float]]  # the trial's metrics for an unlearned model


class StorageError(RuntimeError):
    """The tune storage cannot be read; the message names the file and the way out."""


def open_storage(storage: str) -> Any:
    """An Optuna storage: an RDB for a URL, a journal file for a path (its folder is created, a record a killed
    worker cut short is removed: `repair_journal`)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" in storage:
        # SQLite serialises writers: wait for the lock instead of failing when workers write at once
        kwargs = {"connect_args": {"timeout": 120}} if storage.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(storage, engine_kwargs=kwargs)
    Path(storage).parent.mkdir(parents=True, exist_ok=True)
    repair_journal(Path(storage))
    return optuna.storages.JournalStorage(JournalFileBackend(storage))


def repair_journal(path: Path) -> None:
    """A journal whose last record a killed worker cut short loses that partial record (Optuna's next append would
    join its own record to it, and no worker could read the study again); a journal already broken that way is
    refused, naming the file, the line and the way out. Done under the journal's own lock, so no live writer is cut."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if not path.is_file() or path.stat().st_size == 0:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        content = path.read_bytes()
        complete = content.rfind(b"\n") + 1
        if complete < len(content):
            logger.warning("tune storage %s: removing a record cut short at its end (%d bytes, a worker killed while "
                           "writing it)", path, len(content) - complete)  # fmt: skip
            with path.open("r+b") as journal:
                journal.truncate(complete)
            content = content[:complete]
        for number, line in enumerate(content.splitlines(), start=1):
            try:
                json.loads(line)
            except ValueError:
                raise StorageError(
                    f"tune storage {path}: line {number} is not a whole record (a write cut short, then another "
                    f"appended to it), so no worker can read the study. Way out: keep a copy of the file, delete that "
                    f"line (sed -i '{number}d' {path}) and start the workers again; a trial it recorded is then re-run "
                    f"or left unfinished. Or start over with a new tune.study_name or tune.storage."
                ) from None
    finally:
        lock.release()


def check_methods(config: TuneConfig, method_params: Mapping[str, Mapping[str, Any]]) -> None:
    """Every method's space against its config, before any trial: each end of each range, each choice."""
    for method, params in method_params.items():
        for corner in corner_settings(config.dimensions(method)):
            UnlearnConfig.from_params({**params, **corner}, f"tune.space.methods.{method}")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(
    data: TrialData,
    config: TuneConfig,
    method_params: Mapping[str, Mapping[str, Any]],
    original_metrics: Mapping[str, float],
) -> dict[str, Any]:
    """Run this worker's share of every method's search, then of the seed re-runs of each method's best setting.

    `method_params`: each method's full `unlearn` settings (benchmark.methods over unlearn), which a trial's drawn
    settings (and a re-run's seed) replace key by key. `original_metrics`: the original model's evaluation, for the
    rule's floor. Returns what this worker ran: `{"worker", "trials": [{method, phase, number, state, seconds}]}`.
    """
    import torch

    check_methods(config, method_params)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rule = config.selection
    floor = rule.floor(original_metrics) if rule.mode == "constrained" else None
    storage = open_storage(config.storage)
    me = worker_id()
    ran: list[dict[str, Any]] = []
    logger.info("tune worker %s: %s, storage %s; rule: %s", me, list(method_params), config.storage, rule.describe())
    for method, params in method_params.items():
        study = _open(storage, config, method, phase=SEARCH, params=params, floor=floor)
        dimensions, run = config.dimensions(method), partial(_run_trial, data, config, method, params, floor=floor)
        while (trial := _next_trial(study, config.n_trials)) is not None:
            ran.append(run(study, trial, {name: dim.suggest(trial) for name, dim in dimensions.items()}, SEARCH))
            _stop_if_the_setup_fails(ran)
    if rule.mode == "constrained" and config.seeds:
        for method, params in method_params.items():
            best = _best_search_trial(storage, config, method, floor)
            if best is None:
                logger.warning("tune: no finished search trial of %s; its seeds are not run", method)
                continue
            study = _open(storage, config, method, phase=SEEDS, params=params, floor=floor)
            run = partial(_run_trial, data, config, method, params, floor=floor)
            while (trial := _next_trial(study, len(config.seeds))) is not None:
                ran.append(run(study, trial, {**best["drawn"], "seed": config.seeds[trial.number]}, SEEDS))
                _stop_if_the_setup_fails(ran)
    trials = [{k: v for k, v in t.items() if k != "failure"} for t in ran]
    return {"worker": me, "storage": config.storage, "study_name": config.study_name, "trials": trials}


def study_name(config: TuneConfig, method: str, phase: str) -> str:
    return f"{config.study_name}.{method}" + (".seeds" if phase == SEEDS else "")


def _open(
    storage: Any, config: TuneConfig, method: str, *, phase: str, params: Mapping[str, Any], floor: float | None
) -> Any:
    """Create or join a study; one made with other settings is refused (its trials would not compare)."""
    import optuna

    rule = config.selection
    pareto = rule.mode == "pareto" and phase == SEARCH
    directions = [rule.direction, "maximize"] if pareto else [rule.direction]
    seed = config.sampler.get("seed")
    sampler = optuna.samplers.TPESampler(
        seed=None if seed is None else seed + 1000 * config.worker,
        n_startup_trials=config.sampler.get("n_startup_trials", 4),
        constant_liar=True,  # running trials count as pending, so that workers do not draw the same setting
        constraints_func=None if pareto or floor is None else _constraint,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own log says what each trial does
    name = study_name(config, method, phase)
    study = optuna.create_study(
        study_name=name, storage=storage, directions=directions, sampler=sampler, load_if_exists=True
    )
    settings = json.dumps(
        {
            "method": dict(params),
            "space": {k: asdict(v) for k, v in config.dimensions(method).items()},
            "rule": asdict(rule),
            "n_trials": config.n_trials,
            "seeds": list(config.seeds),
            "metrics": config.metrics,
        },
        sort_keys=True,
        default=str,
    )
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
    elif stored != settings:
        changed = sorted(k for k, v in json.loads(settings).items() if json.loads(stored).get(k) != v)
        raise ParameterError(
            f"parameter tune.study_name: study '{name}' in {config.storage} was run with other settings ({changed} "
            f"differ); its trials would not compare with new ones. Set tune.study_name to a new name (or remove the "
            f"storage to start over)"
        )
    return study


def _constraint(trial: Any) -> list[float]:
    """Optuna's constraint (feasible when <= 0): how far the trial's floor metric falls below the floor."""
    return [trial.user_attrs.get("constraint", math.inf)]


def _next_trial(study: Any, budget: int) -> Any | None:
    """The next trial of this study to run, or None when every number below `budget` is taken. A trial numbered at
    or past the budget (two workers asked at once) is closed unrun, as PRUNED with `surplus`."""
    from optuna.trial import TrialState

    while True:
        if sum(t.number < budget for t in study.get_trials(deepcopy=False)) >= budget:
            return None
        trial = study.ask()
        if trial.number < budget:
            return trial
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.PRUNED)


def _run_trial(  # noqa: PLR0917 (bound by partial per method, then called with the trial)
    data: TrialData,
    config: TuneConfig,
    method: str,
    params: Mapping[str, Any],
    study: Any,
    trial: Any,
    drawn: Mapping[str, Any],
    phase: str,
    *,
    floor: float | None,
) -> dict[str, Any]:
    """Unlearn a copy of the start model with the method's settings and `drawn` over them (a re-run: the pick's and
    its seed), evaluate it, tell the study; a nested MLflow run."""
    from optuna.trial import TrialState

    rule, started, settings = config.selection, time.perf_counter(), {**params, **drawn}
    trial.set_user_attr("drawn", dict(drawn))
    trial.set_user_attr("worker", worker_id())
    label = f"{method} trial {trial.number}" if phase == SEARCH else f"{method} seed {settings.get('seed')}"
    logger.info("tune %s: %s", label, ", ".join(f"{k}={v}" for k, v in drawn.items()) or "defaults")
    tags = {"benchmark_method": method, "method": method_label(settings), "tune_study": study.study_name,
            "tune_phase": phase, "tune_trial": str(trial.number), "seed": str(settings.get("seed"))}  # fmt: skip
    state, values, metrics, failure = TrialState.FAIL, None, {}, None
    with _nested_run(f"{label} @{study.study_name}", tags) as run_id:
        trial.set_user_attr("mlflow_run_id", run_id)
        _log(params=flatten(settings, "unlearn"))
        # no checkpoints: trials are short, and every trial (of every worker) would share unlearn.output_dir
        unlearn_config = UnlearnConfig.from_params({**settings, "output_dir": None}, f"tune.{method}")
        bundle = ModelBundle(copy.deepcopy(data.start.model), data.start.tokenizer, data.start.source)
        try:
            trained, _ = unlearn(bundle, data.forget_templates, unlearn_config, data.prompt,
                                 retain_rows=data.retain_rows, track_as="unlearn")  # fmt: skip
            # A setting can wreck the model (gradient ascent at the top of the ranges: one token repeated) with a
            # finite loss and a sharp output, which no training guard sees; failed here, it is neither evaluated
            # nor ever picked by the rule.
            kept = tokenize_retain(data.retain_rows.select(range(min(len(data.retain_rows), WRECKED_SAMPLE_ROWS))),
                                   trained.tokenizer, data.prompt, unlearn_config.max_length)  # fmt: skip
            check_not_wrecked(trained.model, kept["input_ids"], kept["labels"], trained.tokenizer.pad_token_id,
                              about="retain answers", job=f"unlearn ({unlearn_config.method})",
                              remedy=unlearn_config.remedy())  # fmt: skip
            metrics = {k: float(v) for k, v in data.evaluate(trained).items()}
        except Exception as error:  # noqa: BLE001  diverged, collapsed, wrecked, or anything else: a failed trial
            # with its reason in the study; the worker goes on with the next trial (a trial left RUNNING would
            # stall every worker waiting for it)
            logger.warning("tune %s failed: %s: %s", label, type(error).__name__, error)
            trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:2000])
            metrics, failure = {}, error
        else:
            _log(metrics={k: v for k, v in metrics.items() if math.isfinite(v)})
            if config.keep_models:
                _save(trained, Path(config.keep_models) / config.study_name / method / f"{phase}_{trial.number}")
            objective = metrics.get(rule.objective, math.nan)
            if math.isfinite(objective):
                state = TrialState.COMPLETE
                values = [rule.sampler_value(metrics)]
                if rule.mode == "pareto" and phase == SEARCH:
                    values.append(metrics[rule.floor_metric])
            else:
                trial.set_user_attr("error", f"{rule.objective} is {objective}")
        trial.set_user_attr("metrics", metrics)
        if floor is not None and rule.floor_metric in metrics:
            trial.set_user_attr("constraint", floor - metrics[rule.floor_metric])
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", seconds)
        study.tell(trial, values, state=state)
    logger.info("tune %s: %s in %.0f s%s", label, state.name, seconds,
                "".join(f", {m}={metrics[m]:.4g}" for m in rule.metrics if m in metrics))  # fmt: skip
    ran = {"method": method, "phase": phase, "number": trial.number, "state": state.name, "seconds": seconds}
    return {**ran, "failure": failure} if failure is not None else ran


# A setting can make a training fail (diverge, collapse, wreck the model): that trial fails, the worker goes on. The
# same other error trial after trial is the setup's (a folder another worker holds, out of memory, a bug): the worker
# stops after this many in a row, each trial failed in the study, rather than spend the budget failing.
SETUP_FAILURES_IN_A_ROW = 3
SETTING_FAILURES = ("FloatingPointError", "TrainingError")


def _stop_if_the_setup_fails(ran: list[dict[str, Any]]) -> None:
    last = ran[-SETUP_FAILURES_IN_A_ROW:]
    failures = [t.get("failure") for t in last]
    kinds = {type(f).__name__ for f in failures if f is not None}
    if len(last) == SETUP_FAILURES_IN_A_ROW and None not in failures and len(kinds) == 1:
        (kind,) = kinds
        if kind not in SETTING_FAILURES:
            raise RuntimeError(
                f"tune: {SETUP_FAILURES_IN_A_ROW} trials in a row failed with {kind} (each is failed in its study), "
                f"which no setting explains; stopping this worker. The last one: {failures[-1]}"
            ) from failures[-1]


@contextmanager
def _nested_run(name: str, tags: Mapping[str, str]) -> Iterator[str | None]:
    """A child of the active MLflow run (the `kedro run`'s), with the parent's own tags and `tags`; nothing without
    an active run (the library used on its own)."""
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        yield None
        return
    inherited = {
        key: value
        for key, value in mlflow.get_run(parent.info.run_id).data.tags.items()
        if not key.startswith("mlflow.") or key == "mlflow.source.git.commit"
    }
    with mlflow.start_run(run_name=name, nested=True, tags={**inherited, **tags}) as run:
        yield run.info.run_id


def _log(params: Mapping[str, str] | None = None, metrics: Mapping[str, float] | None = None) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    if params:
        mlflow.log_params(params)
    if metrics:
        mlflow.log_metrics(dict(metrics))


def _save(bundle: ModelBundle, folder: Path) -> None:
    """Save a trial's model, whole or not at all: written beside, then renamed into place."""
    partial = folder.with_name(folder.name + ".partial")
    bundle.model.save_pretrained(partial)
    bundle.tokenizer.save_pretrained(partial)
    partial.rename(folder)


def trial_records(storage: Any, name: str, budget: int) -> list[dict[str, Any]]:
    """The trials of study `name` numbered below `budget` (surplus ones were never run): number, state, drawn
    settings, metrics, worker, seconds, error. Empty when the study does not exist yet."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    return [
        {
            "number": t.number,
            "state": t.state.name,
            "drawn": t.user_attrs.get("drawn", dict(t.params)),
            "metrics": t.user_attrs.get("metrics", {}),
            "worker": t.user_attrs.get("worker"),
            "seconds": t.user_attrs.get("seconds"),
            "error": t.user_attrs.get("error"),
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
        }
        for t in study.get_trials(deepcopy=False)
        if t.number < budget
    ]


def _best_search_trial(storage: Any, config: TuneConfig, method: str, floor: float | None) -> dict[str, Any] | None:
    """The method's best search trial by the rule, once all its trials are finished (waiting for other workers')."""
    name, deadline = study_name(config, method, SEARCH), time.monotonic() + config.wait_s
    while True:
        records = trial_records(storage, name, config.n_trials)
        running = [r["number"] for r in records if r["state"] not in _DONE_STATES]
        if len(records) >= config.n_trials and not running:
            return config.selection.best([r for r in records if r["state"] == "COMPLETE"], floor)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"tune: study '{name}' still has trials {running} unfinished after tune.wait_s={config.wait_s:g} s; "
                f"a worker that died leaves its trial RUNNING: raise tune.wait_s, or start over with a new "
                f"tune.study_name"
            )
        logger.info("tune: waiting for %s's trials %s (other workers)", method, running)
        time.sleep(5)
