"""A tune trial whose unlearning wrecks the model (finite loss and gradient, output far from uniform, so no training
guard fires) is failed in its study with the reason, before it is evaluated, so the rule never picks it."""

from __future__ import annotations

import pytest
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat
from flat_pipeline.tuning import TrialData, TuneConfig, open_storage, run_worker, study_name, trial_records

# Gradient ascent on the untrained tiny Llama, 5 steps (measured on 16 retain answers, ln 1024 = 6.93): at 1e-5 the
# retain loss stays 6.97 nats per token; at 1e-1 it reaches 16.2, confidently wrong, as a finetuned model gets from
# gradient ascent at the top of the tune ranges (the test world's original at lr 3e-3, 2-8 epochs: 13.6-53 nats,
# greedy answers one token repeated, so retain ROUGE 0 and model_utility 0)
GA = {"method": "ga", "num_train_epochs": 1, "per_device_train_batch_size": 8}
METHODS = {"gentle": {**GA, "learning_rate": 1e-5}, "wrecking": {**GA, "learning_rate": 1e-1}}


@pytest.fixture
def data(tiny_model_dir, small_world, forget_templates):
    evaluated = []

    def evaluate(bundle):
        evaluated.append(bundle)
        return {"forget_quality": 1e-120, "model_utility": 0.0}  # what the wrecked trials scored

    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    trial_data = TrialData(load_causal_lm(str(tiny_model_dir)), forget_templates, retain, PromptFormat(), evaluate)
    return trial_data, evaluated


def test_a_trial_that_wrecks_the_model_fails_with_its_reason_and_is_never_picked(data, tmp_path):
    trial_data, evaluated = data
    config = TuneConfig(storage=str(tmp_path / "tune.journal"), n_trials=1, seeds=[1])
    ran = run_worker(trial_data, config, METHODS, {"model_utility": 0.5})
    storage = open_storage(config.storage)
    records = {method: trial_records(storage, study_name(config, method, "search"), 1)[0] for method in METHODS}
    assert records["gentle"]["state"] == "COMPLETE"
    wrecked = records["wrecking"]
    assert wrecked["state"] == "FAIL"
    assert wrecked["metrics"] == {}  # not evaluated: the evaluation of a wrecked model is wasted time
    assert wrecked["error"].startswith(
        "TrainingError: unlearn (ga): the unlearned model is wrecked: on its first 16 retain answers its mean token "
        "loss is "
    )
    assert (
        "nats, worse than a uniform guess over its 1024 tokens (ln 1024 = 6.93) by more than 1 nat: it is "
        "confidently wrong, not just ignorant, and its scores would say nothing. Lower tune.wrecking.learning_rate "
        "(now 0.1)." in wrecked["error"]
    )
    assert len(evaluated) == 2  # the gentle trial and its seed re-run
    # the rule picks among finished trials only: with its one trial failed, the method has no pick and no re-run
    assert [(t["method"], t["phase"], t["state"]) for t in ran["trials"]] == [
        ("gentle", "search", "COMPLETE"),
        ("wrecking", "search", "FAIL"),
        ("gentle", "seed", "COMPLETE"),
    ]


def test_a_trial_whose_evaluation_raises_anything_fails_with_its_reason_and_the_worker_goes_on(
    tiny_model_dir, small_world, forget_templates, tmp_path
):
    """The issue's case: a diverged model's evaluation died with a bare OverflowError, which escaped the trial, killed
    the worker and left the trial RUNNING for every other worker to wait on (issue 25)."""
    calls = []

    def evaluate(bundle):
        calls.append(bundle)
        if len(calls) == 1:
            raise OverflowError("math range error")
        return {"forget_quality": 0.5, "model_utility": 0.6}

    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    trial_data = TrialData(load_causal_lm(str(tiny_model_dir)), forget_templates, retain, PromptFormat(), evaluate)
    config = TuneConfig(storage=str(tmp_path / "tune.journal"), n_trials=2, seeds=[])
    ran = run_worker(trial_data, config, {"gentle": METHODS["gentle"]}, {"model_utility": 0.5})
    records = trial_records(open_storage(config.storage), study_name(config, "gentle", "search"), 2)
    assert [r["state"] for r in records] == ["FAIL", "COMPLETE"]
    assert records[0]["error"] == "OverflowError: math range error"
    assert [t["state"] for t in ran["trials"]] == ["FAIL", "COMPLETE"]


def test_the_same_setup_error_three_trials_in_a_row_stops_the_worker_with_each_trial_failed(
    tiny_model_dir, small_world, forget_templates, tmp_path
):
    def evaluate(bundle):
        raise PermissionError(13, "Permission denied", "/shared/mlruns")

    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    trial_data = TrialData(load_causal_lm(str(tiny_model_dir)), forget_templates, retain, PromptFormat(), evaluate)
    config = TuneConfig(storage=str(tmp_path / "tune.journal"), n_trials=5, seeds=[])
    message = (
        r"^tune: 3 trials in a row failed with PermissionError \(each is failed in its study\), which no setting "
        r"explains; stopping this worker\. The last one: \[Errno 13\]"
    )
    with pytest.raises(RuntimeError, match=message):
        run_worker(trial_data, config, {"gentle": METHODS["gentle"]}, {"model_utility": 0.5})
    records = trial_records(open_storage(config.storage), study_name(config, "gentle", "search"), 5)
    assert [r["state"] for r in records] == ["FAIL"] * 3  # none left RUNNING for other workers to wait on
