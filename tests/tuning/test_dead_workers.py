"""A worker that dies in the middle of a trial costs minutes, not a day (issue 26): on an RDB storage its trial stops
beating, the next worker to look fails it and runs it again in the same budget slot with the same settings, and the
study ends with exactly its budget of finished trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.tuning import TrialData, TuneConfig, open_storage, run_worker, study_name, trial_records
from flat_pipeline.tuning.study import LOST_WORKER, StorageError

from .tune_worker_process import METHOD

SPACE = {"shared": {"learning_rate": {"low": 1e-6, "high": 1e-5, "log": True}}}
WORKER_SCRIPT = Path(__file__).with_name("tune_worker_process.py")


@pytest.fixture
def trial_data(tiny_model_dir, small_world, forget_templates):
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    evaluate = lambda bundle: {"forget_quality": 0.5, "model_utility": 0.5}  # noqa: E731
    return TrialData(load_causal_lm(str(tiny_model_dir)), forget_templates, retain, PromptFormat(), evaluate)


def _dead_worker_trial(config: TuneConfig) -> tuple[int, float]:
    """A trial of the ga search that a worker took, beat for once and then died on: (its number, its setting)."""
    storage = open_storage(config.storage, config)
    study = optuna.create_study(study_name=study_name(config, "ga", "search"), storage=storage, direction="maximize")
    trial = study.ask()
    learning_rate = trial.suggest_float("learning_rate", 1e-6, 1e-5, log=True)
    storage.record_heartbeat(trial._trial_id)
    time.sleep(config.grace_s + 0.5)  # no heartbeat since: stale
    return trial.number, learning_rate


@pytest.fixture(params=["sqlite", "postgresql"])
def rdb_url(request, tmp_path):
    """The two RDB storages: SQLite (one machine, the default) and PostgreSQL (a cluster: a real server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tune.db"
    return request.getfixturevalue("postgres").database("tune")


def test_a_trial_whose_worker_stopped_beating_is_run_again_in_its_slot_with_its_settings(trial_data, rdb_url):
    config = TuneConfig(storage=rdb_url, n_trials=2, seeds=[], heartbeat_s=1, grace_s=2, space=SPACE)
    number, learning_rate = _dead_worker_trial(config)
    ran = run_worker(trial_data, config, {"ga": METHOD}, {"model_utility": 0.5})
    # slot 0 again, before or after slot 1 (as soon as the storage's clock says the heartbeat is older than the grace)
    assert sorted((t["number"], t["state"]) for t in ran["trials"]) == [(0, "COMPLETE"), (1, "COMPLETE")]
    records = trial_records(open_storage(config.storage), study_name(config, "ga", "search"), 2)
    assert [(r["number"], r["state"], r["attempts"]) for r in records] == [(0, "COMPLETE", 2), (1, "COMPLETE", 1)]
    assert records[0]["drawn"] == {"learning_rate": learning_rate}  # the dead trial's setting, not a new draw
    study = optuna.load_study(study_name=study_name(config, "ga", "search"), storage=open_storage(config.storage))
    states = {t.number: t.state.name for t in study.get_trials()}
    assert sorted(states.values()) == ["COMPLETE", "COMPLETE", "FAIL"] and states[number] == "FAIL"


def test_a_trial_whose_worker_died_more_often_than_retries_allow_is_failed_with_the_reason(trial_data, tmp_path):
    config = TuneConfig(storage=f"sqlite:///{tmp_path}/tune.db", n_trials=2, seeds=[], heartbeat_s=1, grace_s=2,
                        retries=0, space=SPACE)  # fmt: skip
    _dead_worker_trial(config)
    ran = run_worker(trial_data, config, {"ga": METHOD}, {"model_utility": 0.5})
    assert [(t["number"], t["state"]) for t in ran["trials"]] == [(1, "COMPLETE")]
    records = trial_records(open_storage(config.storage), study_name(config, "ga", "search"), 2)
    assert [(r["number"], r["state"], r["error"]) for r in records] == [(0, "FAIL", LOST_WORKER), (1, "COMPLETE", None)]


def test_an_unreachable_database_is_named_without_its_password(tmp_path):
    with pytest.raises(StorageError) as caught:
        open_storage("postgresql://tune:s3cret@127.0.0.1:9/unlearning")  # port 9 (discard): nothing listens
    message = str(caught.value)
    assert message.startswith("tune storage postgresql://tune:***@127.0.0.1:9/unlearning: cannot open it (")
    assert "s3cret" not in message and "Check that the database server runs" in message


@pytest.mark.slow
def test_two_workers_one_killed_in_a_trial_the_other_finishes_the_budget_and_reruns_it_once(tiny_model_dir, tmp_path):
    """The issue's test: SIGKILL one of two workers in the middle of a trial. The survivor finishes the study with
    exactly the budget completed, the killed trial run again once, and waits no longer than the grace period plus
    one trial."""
    storage, grace_s, heartbeat_s, evaluate_s = f"sqlite:///{tmp_path}/tune.db", 2, 1, 1.5
    args = {"storage": storage, "model_dir": str(tiny_model_dir), "n_trials": 4, "heartbeat_s": heartbeat_s,
            "grace_s": grace_s, "evaluate_s": evaluate_s}  # fmt: skip

    def start(worker: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(WORKER_SCRIPT), json.dumps({**args, "worker": worker})],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip

    doomed = start(0)
    config = TuneConfig(storage=storage, n_trials=4, seeds=[])
    name = study_name(config, "ga", "search")
    deadline = time.monotonic() + 120
    while not any(r["state"] == "RUNNING" for r in trial_records(open_storage(storage), name, 4)):
        assert time.monotonic() < deadline and doomed.poll() is None, "the first worker never started a trial"
        time.sleep(0.2)
    survivor = start(1)
    time.sleep(0.5)  # in its evaluation
    os.kill(doomed.pid, signal.SIGKILL)
    killed_at = time.time()
    doomed.wait()
    output = survivor.communicate(timeout=300)[0]
    assert survivor.returncode == 0, output[-4000:]

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials()
    killed = [t for t in trials if t.state.name == "FAIL"]
    assert len(killed) == 1 and killed[0].user_attrs["worker"].endswith(f":{doomed.pid}")
    reruns = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
    assert len(reruns) == 1 and reruns[0].state.name == "COMPLETE"  # run again once
    assert reruns[0].params == killed[0].params  # with the killed trial's setting
    records = trial_records(open_storage(storage), name, 4)
    assert [r["state"] for r in records] == ["COMPLETE"] * 4  # exactly the budget
    assert sum(r["attempts"] for r in records) == 5
    survived = json.loads(output.strip().splitlines()[-1])["trials"]
    assert sorted(t["number"] for t in survived) == [0, 1, 2, 3]  # its own three and the killed one's slot again
    # the re-run started within the grace period (and the heartbeat and poll intervals) of the kill, plus at most
    # one trial the survivor had started before the killed one went stale
    longest_trial = max((t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete)
    waited = reruns[0].datetime_start.timestamp() - killed_at
    assert waited <= grace_s + 2 * heartbeat_s + longest_trial + 1.0, (waited, longest_trial)
