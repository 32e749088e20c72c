"""Tuning every method by one rule with Optuna: the studies, the worker loop and what the storage holds.

Per method two studies live in one Optuna storage (`tune.storage`): `<study_name>.<method>` holds the search
(`n_trials` trials drawn from the method's space) and `<study_name>.<method>.seeds` the re-runs of its best setting
with each of `seeds`. Any number of workers (processes, GPUs, machines) running `run_worker` on the same storage
share them: a trial's number is given by the storage, a worker runs only numbers below the budget, so together they
finish exactly `n_trials` (and one re-run per seed), none twice. A worker searches every method first, then runs
the seeds, waiting for the searches other workers still run.

Storage: a URL is an RDB (`sqlite:///...`, the default, `<data_root>/06_models/tune/optuna.db`, for one machine;
`postgresql://...` for a cluster); a path is an Optuna journal file (for a shared filesystem without a database).

Dead workers: on an RDB, a worker records a heartbeat for its running trial every `heartbeat_s`; a trial without one
for `grace_s` (its worker killed, pre-empted, out of memory, its node lost) is failed by the next worker that looks
and re-run, in the same budget slot, with the same drawn settings (Optuna's heartbeat and `RetryFailedTrialCallback`),
up to `retries` times. A journal file has no heartbeat: there, a dead worker's trial waits `wait_s`.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import socket
import time
import warnings
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
LOST_WORKER = "its worker died while running it (no heartbeat within tune.grace_s), and no re-run is left"


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
    wait_s: float = 86400.0  # how long a worker waits for trials other workers still run
    heartbeat_s: int = 60  # RDB storages: a running trial's heartbeat interval
    grace_s: int | None = None  # RDB storages: a trial without heartbeat this long lost its worker; None: 3 x heartbeat
    retries: int = 1  # re-runs of a trial whose worker died (each in the same slot, with the same settings)
    replay: Mapping[str, Any] | None = None  # {method, phase, trial}: run that trial of the storage again, alone
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
        check_number(f"{block}.heartbeat_s", self.heartbeat_s, minimum=1, integer=True)
        check_number(f"{block}.grace_s", self.grace_s, above=self.heartbeat_s, integer=True, optional=True)
        if self.grace_s is None:
            self.grace_s = 3 * self.heartbeat_s
        check_number(f"{block}.retries", self.retries, minimum=0, integer=True)
        if self.replay is not None:
            keys = {"method", "phase", "trial"}
            if (
                not isinstance(self.replay, Mapping)
                or set(self.replay) != keys
                or self.replay["phase"] not in (SEARCH, SEEDS)
            ):
                raise ParameterError(
                    f"parameter {block}.replay: expected {{method, phase: {SEARCH} | {SEEDS}, trial}}, got "
                    f"{self.replay!r}"
                )
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


def open_storage(storage: str, config: TuneConfig | None = None) -> Any:
    """An Optuna storage: an RDB for a URL, a journal file for a path (its folder is created, a record a killed
    worker cut short is removed: `repair_journal`). With `config` (a worker's), an RDB has `config`'s heartbeat and
    re-runs dead workers' trials. An RDB that cannot be reached is a `StorageError` naming the URL without its
    password."""
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if "://" not in storage:
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
        repair_journal(Path(storage))
        return optuna.storages.JournalStorage(JournalFileBackend(storage))
    kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite"):
        # SQLite serialises writers: wait for the lock instead of failing when workers write at once
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
        database = storage.split("///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
    if config is not None:
        kwargs.update(heartbeat_interval=config.heartbeat_s, grace_period=config.grace_s,
                      failed_trial_callback=RerunDeadWorkersTrial(config.retries))  # fmt: skip
    try:
        return _rdb_storage(storage, kwargs)
    except ImportError as error:
        raise StorageError(
            f"tune storage {redacted(storage)}: its database driver is not installed ({error}). PostgreSQL: "
            f'pip install -e ".[cluster]"'
        ) from None
    except Exception as error:  # noqa: BLE001  SQLAlchemy's errors of every driver: unreachable, refused, no database
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise StorageError(
            f"tune storage {redacted(storage)}: cannot open it ({type(error).__name__}: {reason}). Check that the "
            f"database server runs and this machine reaches it, the user, password and database name in "
            f"tune.storage, or use a local one: tune.storage=sqlite:///<file>"
        ) from None


def _rdb_storage(url: str, kwargs: dict[str, Any]) -> Any:
    """Optuna's RDBStorage, which creates its tables in a new database. Workers of a job array that start together
    on a new database create them at once, and all but one fail on PostgreSQL's catalog (a duplicate type or table):
    those try again, finding the tables made."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():  # the heartbeat's arguments are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (IntegrityError, ProgrammingError, OperationalError) as error:
            # SQLite says so with an OperationalError ("table ... already exists"), as it says "unable to open"
            made_meanwhile = not isinstance(error, OperationalError) or "already exists" in str(error)
            if attempt == 4 or not made_meanwhile:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def redacted(url: str) -> str:
    """A storage URL fit for a log or an error: its password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  not a URL SQLAlchemy reads: show no credentials at all
        return url.split("://", 1)[0] + "://..." if "@" in url else url


class RerunDeadWorkersTrial:
    """Optuna's failed-trial callback for trials whose worker stopped beating: logs the loss and re-queues the trial
    (`RetryFailedTrialCallback`: same settings, marked as a retry of the first attempt) while retries are left."""

    def __init__(self, retries: int) -> None:
        from optuna.storages import RetryFailedTrialCallback

        self.retries = retries
        self._retry = RetryFailedTrialCallback(max_retry=retries)

    def __call__(self, study: Any, trial: Any) -> None:
        attempts = len(trial.system_attrs.get("retry_history", [])) + 1
        again = attempts <= self.retries
        logger.warning("tune: trial %d of study %s lost its worker %s (no heartbeat within the grace period); %s",
                       trial.number, study.study_name, trial.user_attrs.get("worker", "?"),
                       "re-running it" if again else f"not re-run: it failed this way {attempts} times")  # fmt: skip
        self._retry(study, trial)


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
    rule's floor. Returns what this worker ran: `{"worker", "trials": [{method, phase, number, state, seconds}]}`
    (`number`: the trial's slot in its study's budget).
    """
    import torch

    check_methods(config, method_params)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    rule = config.selection
    floor = rule.floor(original_metrics) if rule.mode == "constrained" else None
    storage = open_storage(config.storage, config)
    me = worker_id()
    ran: list[dict[str, Any]] = []
    logger.info("tune worker %s: %s, storage %s; rule: %s", me, list(method_params), redacted(config.storage),
                rule.describe())  # fmt: skip

    def run_share(method: str, phase: str, best: Mapping[str, Any] | None = None) -> Any:
        """Run the trials of the method's study (phase) that no worker has taken, and re-runs of dead workers'."""
        study = _open(storage, config, method, phase=phase, params=method_params[method], floor=floor)
        run = partial(_run_trial, data, config, method, method_params[method], floor=floor)
        dimensions, budget = config.dimensions(method), _budget(config, phase)
        while (taken := _next_trial(study, budget)) is not None:
            trial, slot = taken
            if phase == SEARCH:
                drawn = {name: dim.suggest(trial) for name, dim in dimensions.items()}
            else:
                drawn = {**best["drawn"], "seed": config.seeds[slot]}
            ran.append(run(study, trial, slot, drawn, phase))
            _stop_if_the_setup_fails(ran)
        return study

    def finish(method: str, phase: str, best: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The study's records once every trial of its budget is finished: this worker takes what is left and
        re-runs of trials whose worker died, waiting for those other workers still run (up to `wait_s`)."""
        name, deadline = study_name(config, method, phase), time.monotonic() + config.wait_s
        while True:
            run_share(method, phase, best)
            records = trial_records(storage, name, _budget(config, phase))
            running = [r["number"] for r in records if r["state"] not in _DONE_STATES]
            if len(records) >= _budget(config, phase) and not running:
                return records
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"tune: study '{name}' still has trials {running} unfinished after tune.wait_s={config.wait_s:g} "
                    f"s; a worker that died on a journal storage (no heartbeat) leaves its trial RUNNING: raise "
                    f"tune.wait_s, use an RDB storage (sqlite:///..., postgresql://...), or start over with a new "
                    f"tune.study_name"
                )
            logger.info("tune: waiting for %s's trials %s (other workers)", method, running)
            time.sleep(min(5.0, config.heartbeat_s))

    for method in method_params:
        run_share(method, SEARCH)
    if rule.mode == "constrained" and config.seeds:
        picks = {}
        for method in method_params:
            finished = [r for r in finish(method, SEARCH) if r["state"] == "COMPLETE"]
            picks[method] = config.selection.best(finished, floor)
            if picks[method] is None:
                logger.warning("tune: no finished search trial of %s; its seeds are not run", method)
                continue
            run_share(method, SEEDS, picks[method])
        for method, best in picks.items():
            if best is not None:
                finish(method, SEEDS, best)
    else:
        for method in method_params:
            finish(method, SEARCH)
    trials = [{k: v for k, v in t.items() if k != "failure"} for t in ran]
    return {"worker": me, "storage": redacted(config.storage), "study_name": config.study_name, "trials": trials}


def replay_trial(
    data: TrialData,
    config: TuneConfig,
    method_params: Mapping[str, Mapping[str, Any]],
    original_metrics: Mapping[str, float],
) -> dict[str, Any]:
    """Run one finished trial of the storage again (`config.replay`: method, phase, trial slot) with the settings it
    drew, outside its study (an in-memory one of the same name: the storage is left as it is), as a nested MLflow run
    with the trial's tags; `kedro reproduce` compares its metrics with the original trial's. Returns the worker summary
    with that one trial and its metrics."""
    import optuna
    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    method, phase, slot = config.replay["method"], config.replay["phase"], int(config.replay["trial"])
    if method not in method_params:
        raise ParameterError(f"parameter tune.replay.method: {method!r} is not a tuned method ({list(method_params)})")
    name = study_name(config, method, phase)
    records = {r["number"]: r for r in trial_records(open_storage(config.storage), name, 10**9)}
    if slot not in records:
        raise ParameterError(f"parameter tune.replay.trial: study '{name}' in {redacted(config.storage)} has no "
                             f"trial {slot} (it has {sorted(records)})")  # fmt: skip
    rule = config.selection
    floor = rule.floor(original_metrics) if rule.mode == "constrained" else None
    directions = [rule.direction, "maximize"] if rule.mode == "pareto" and phase == SEARCH else [rule.direction]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, directions=directions)
    trial = study.ask()
    ran = _run_trial(data, config, method, method_params[method], study, trial, slot, records[slot]["drawn"], phase,
                     floor=floor)  # fmt: skip
    replayed = {k: v for k, v in ran.items() if k != "failure"}
    replayed["metrics"] = study.trials[0].user_attrs.get("metrics", {})
    return {"worker": worker_id(), "storage": redacted(config.storage), "study_name": config.study_name,
            "trials": [replayed], "replay_of": dict(config.replay)}  # fmt: skip


def _budget(config: TuneConfig, phase: str) -> int:
    return config.n_trials if phase == SEARCH else len(config.seeds)


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


def _slots(trials: Sequence[Any]) -> dict[int, int]:
    """Trial number -> its slot in the study's budget. New trials fill slots 0, 1, 2, ... in the order the storage
    numbered them; a re-run of a trial whose worker died fills its first attempt's slot (Optuna records that attempt
    as the `failed_trial` system attribute, when the re-run is created, so every worker computes the same slots)."""
    slots: dict[int, int] = {}
    new = 0
    for trial in sorted(trials, key=lambda t: t.number):
        first = trial.system_attrs.get("failed_trial")
        if first is None:
            slots[trial.number], new = new, new + 1
        else:
            slots[trial.number] = slots[first]
    return slots


def _next_trial(study: Any, budget: int) -> tuple[Any, int] | None:
    """The next trial of this study to run and its slot, or None when every slot below `budget` is taken and no
    re-run is waiting. A trial past the budget (two workers asked at once) is closed unrun, as PRUNED with
    `surplus`. First, trials whose worker stopped beating (RDB storages) are failed and queued again."""
    import optuna
    from optuna.trial import TrialState

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    while True:
        trials = study.get_trials(deepcopy=False)
        slots = _slots(trials)
        new = sum("failed_trial" not in t.system_attrs for t in trials)
        if new >= budget and not any(t.state == TrialState.WAITING and slots[t.number] < budget for t in trials):
            return None
        with warnings.catch_warnings():
            # we run the trials ourselves (ask and tell), with the heartbeat Study.optimize would start: _run_trial
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize")
            trial = study.ask()
        trials = study.get_trials(deepcopy=False)
        slot = _slots(trials)[trial.number]
        if slot < budget:
            first = next(t for t in trials if t.number == trial.number).system_attrs.get("failed_trial")
            if first is not None:
                trial.set_user_attr("rerun_of", first)
            return trial, slot
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=TrialState.PRUNED)


def _run_trial(  # noqa: PLR0917 (bound by partial per method, then called with the trial)
    data: TrialData,
    config: TuneConfig,
    method: str,
    params: Mapping[str, Any],
    study: Any,
    trial: Any,
    slot: int,
    drawn: Mapping[str, Any],
    phase: str,
    *,
    floor: float | None,
) -> dict[str, Any]:
    """Unlearn a copy of the start model with the method's settings and `drawn` over them (a re-run: the pick's and
    its seed), evaluate it, tell the study; a nested MLflow run. The trial beats while it runs (RDB storages)."""
    from optuna.storages._heartbeat import get_heartbeat_thread  # what Study.optimize runs around each trial
    from optuna.trial import TrialState

    rule, started, settings = config.selection, time.perf_counter(), {**params, **drawn}
    trial.set_user_attr("drawn", dict(drawn))
    trial.set_user_attr("worker", worker_id())
    trial.set_user_attr("slot", slot)
    first = trial.user_attrs.get("rerun_of")
    retry = f" (re-run of trial {first}, whose worker died)" if first is not None else ""
    label = f"{method} trial {slot}" if phase == SEARCH else f"{method} seed {settings.get('seed')}"
    logger.info("tune %s%s: %s", label, retry, ", ".join(f"{k}={v}" for k, v in drawn.items()) or "defaults")
    tags = {"benchmark_method": method, "method": method_label(settings), "tune_study": study.study_name,
            "tune_phase": phase, "tune_trial": str(slot), "seed": str(settings.get("seed"))}  # fmt: skip
    state, values, metrics, failure = TrialState.FAIL, None, {}, None
    with (
        get_heartbeat_thread(trial._trial_id, study._storage),
        _nested_run(f"{label} @{study.study_name}", tags) as run_id,
    ):
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
    ran = {"method": method, "phase": phase, "number": slot, "state": state.name, "seconds": seconds}
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
    """The trials of study `name` by slot below `budget` (surplus ones were never run), the last attempt of each (a
    trial whose worker died is re-run in its slot): number (the slot), state, drawn settings, metrics, worker,
    seconds, error, MLflow run id, and `attempts`. Empty when the study does not exist yet."""
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return []
    trials = study.get_trials(deepcopy=False)
    slots = _slots(trials)
    last: dict[int, Any] = {}
    attempts: dict[int, int] = {}
    for t in trials:
        slot = slots[t.number]
        if slot < budget:
            last[slot] = t  # in number order: a re-run comes after its first attempt
            attempts[slot] = attempts.get(slot, 0) + 1
    return [
        {
            "number": slot,
            "state": t.state.name,
            "drawn": t.user_attrs.get("drawn", dict(t.params)),
            "metrics": t.user_attrs.get("metrics", {}),
            "worker": t.user_attrs.get("worker"),
            "seconds": t.user_attrs.get("seconds"),
            # a trial failed by another worker because its own stopped beating has no error of its own
            "error": t.user_attrs.get("error")
            or (LOST_WORKER if t.state.name == "FAIL" and "seconds" not in t.user_attrs else None),  # fmt: skip
            "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "attempts": attempts[slot],
        }
        for slot, t in sorted(last.items())
    ]
