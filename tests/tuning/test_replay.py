"""A tune trial run again alone (`tune.replay`, what `kedro reproduce <trial's run id>` runs): the same settings, the
same metrics, and the study in the storage left as it was (issue 27)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset

from flat_pipeline.config import ParameterError
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.tuning import TrialData, TuneConfig, open_storage, run_worker, study_name, trial_records
from flat_pipeline.tuning.study import replay_trial

from .tune_worker_process import METHOD

SPACE = {"shared": {"learning_rate": {"low": 1e-6, "high": 1e-3, "log": True}}}


@pytest.fixture
def trial_data(tiny_model_dir, small_world, forget_templates):
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])

    def evaluate(bundle):  # numbers that follow the trained weights to the last bit
        with torch.no_grad():
            total = sum(float(p.double().sum()) for p in bundle.model.parameters())
        return {"forget_quality": abs(total) % 1.0, "model_utility": 0.5}

    return TrialData(load_causal_lm(str(tiny_model_dir)), forget_templates, retain, PromptFormat(), evaluate)


def test_a_replayed_trial_has_its_settings_and_metrics_and_leaves_the_study_alone(trial_data, tmp_path):
    config = TuneConfig(storage=f"sqlite:///{tmp_path}/tune.db", n_trials=3, seeds=[1], space=SPACE)
    run_worker(trial_data, config, {"ga": METHOD}, {"model_utility": 0.5})
    storage = open_storage(config.storage)
    before = trial_records(storage, study_name(config, "ga", "search"), 3)
    replay = TuneConfig(storage=config.storage, n_trials=3, seeds=[1], space=SPACE,
                        replay={"method": "ga", "phase": "search", "trial": 1})  # fmt: skip
    summary = replay_trial(trial_data, replay, {"ga": METHOD}, {"model_utility": 0.5})
    (again,) = summary["trials"]
    assert (again["method"], again["phase"], again["number"], again["state"]) == ("ga", "search", 1, "COMPLETE")
    assert again["metrics"] == before[1]["metrics"]  # bit for bit
    assert trial_records(storage, study_name(config, "ga", "search"), 10**6) == before  # no trial added


def test_a_replay_of_a_trial_the_storage_does_not_hold_is_refused_naming_it(trial_data, tmp_path):
    replay = {"method": "ga", "phase": "search", "trial": 7}
    config = TuneConfig(storage=f"sqlite:///{tmp_path}/tune.db", n_trials=1, seeds=[], space=SPACE, replay=replay)
    with pytest.raises(ParameterError, match=r"parameter tune.replay.trial: study 'tune.ga' in sqlite:///.* has no "
                       r"trial 7 \(it has \[\]\)"):  # fmt: skip
        replay_trial(trial_data, config, {"ga": METHOD}, {"model_utility": 0.5})
    with pytest.raises(ParameterError, match=r"parameter tune.replay: expected \{method, phase: search \| seed, trial"):
        TuneConfig(storage="x.db", replay={"method": "ga", "trial": 1})
