"""Evaluating while unlearning (flat_pipeline.training.trajectory): one point per epoch or per N steps with the
requested metrics, bad settings refused before training and naming the parameter, the points in MLflow as metric
histories at the optimiser step, and the training itself unchanged by them."""

from __future__ import annotations

import mlflow
import pytest
import torch
from datasets import Dataset
from mlflow import MlflowClient

from flat_pipeline.config import ParameterError
from flat_pipeline.evaluation import EvaluateConfig, RetainReference, evaluation_sets, tokenizer_fingerprint
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.training.trajectory import Trajectory, TrajectoryConfig
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

# 40 forget items (forget10 of the 20-author world), batch 8: 5 optimiser steps an epoch
TRAINING = {"learning_rate": 1e-3, "num_train_epochs": 2, "per_device_train_batch_size": 8}
METRICS = ["forget_truth_ratio", "forget_Q_A_Prob", "mia_min_k", "forget_Q_A_ROUGE"]
EVALUATE = EvaluateConfig(max_new_tokens=8)  # short greedy answers: a random model rambles to the limit


@pytest.fixture(scope="module")
def sets(small_world):
    splits = {
        name: Dataset.from_list(small_world[name]) for name in ("forget10_perturbed", "holdout10", "retain_perturbed")
    }
    return evaluation_sets(
        splits, {"retain": "retain_perturbed"}, splits["forget10_perturbed"], splits["holdout10"], 30
    )


def trajectory(sets, track=False, **settings):
    config = TrajectoryConfig(**{"every": "epoch", "metrics": METRICS, "max_items": 6, **settings})
    return Trajectory(config, sets, EVALUATE, track=track)


def config(**trajectory):
    return UnlearnConfig.from_params({**TRAINING, **({"trajectory": trajectory} if trajectory else {})})


def test_one_point_per_epoch_with_the_requested_metrics_and_the_start(tiny_model_dir, forget_templates, sets):
    traced = trajectory(sets)
    bundle, history = unlearn(load_causal_lm(str(tiny_model_dir)), forget_templates, config(), trajectory=traced)
    assert [(p["step"], p["epoch"]) for p in traced.points] == [(0, 0.0), (5, 1.0), (10, 2.0)]
    assert all(set(p) == {"step", "epoch", *METRICS} for p in traced.points)
    for name in METRICS:  # merged into the unlearning's history, beside its loss
        assert [entry["step"] for entry in history[f"trajectory/{name}"]] == [0, 5, 10]
    assert [entry["value"] for entry in history["trajectory/epoch"]] == [0.0, 1.0, 2.0]
    assert len(history["unlearn_loss"]) == 10
    assert bundle.model.training  # scoring and generation switch to eval mode: the trajectory switches back
    assert traced.points[-1]["forget_Q_A_Prob"] != traced.points[0]["forget_Q_A_Prob"]  # each point its own model


def test_every_n_steps_and_the_last_step(tiny_model_dir, forget_templates, sets):
    traced = trajectory(sets, every=3, at_start=False, metrics=["forget_Q_A_Prob"])
    unlearn(load_causal_lm(str(tiny_model_dir)), forget_templates, config(), trajectory=traced)
    assert [p["step"] for p in traced.points] == [3, 6, 9, 10]  # 10: the last step, not a multiple of 3
    assert [round(p["epoch"], 1) for p in traced.points] == [0.6, 1.2, 1.8, 2.0]


def with_dropout(model):
    """Attention dropout on: a random state the evaluation drew from would then train to other weights."""
    for module in model.modules():
        if hasattr(module, "attention_dropout"):
            module.attention_dropout = 0.3
    return model


def trained_weights(tiny_model_dir, forget_templates, **kwargs):
    bundle = load_causal_lm(str(tiny_model_dir))
    with_dropout(bundle.model)
    _, history = unlearn(bundle, forget_templates, config(), **kwargs)
    return {k: v.clone() for k, v in bundle.model.state_dict().items()}, history["unlearn_loss"]


def test_the_training_is_the_same_with_and_without_a_trajectory(tiny_model_dir, forget_templates, sets):
    plain, plain_losses = trained_weights(tiny_model_dir, forget_templates)
    traced, traced_losses = trained_weights(
        tiny_model_dir, forget_templates, trajectory=trajectory(sets, every=2)
    )  # every 2 steps, mid-epoch too
    assert traced_losses == plain_losses
    assert all(torch.equal(plain[name], traced[name]) for name in plain)

    # the check can fail: a draw from torch's random state between epochs changes the dropout masks, and the weights
    drawn, _ = trained_weights(tiny_model_dir, forget_templates, on_epoch_end=lambda epoch: torch.rand(1))
    assert not all(torch.equal(plain[name], drawn[name]) for name in plain)


def test_the_points_are_metric_histories_of_the_active_mlflow_run(tiny_model_dir, forget_templates, sets, tmp_path):
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment = mlflow.create_experiment("trajectory", artifact_location=(tmp_path / "mlruns").as_uri())
        with mlflow.start_run(experiment_id=experiment) as run:
            traced = trajectory(sets, track=True, metrics=["forget_truth_ratio", "forget_Q_A_Prob"])
            unlearn(load_causal_lm(str(tiny_model_dir)), forget_templates, config(), trajectory=traced)
        client = MlflowClient()
        for name in ("forget_truth_ratio", "forget_Q_A_Prob"):
            history = sorted(client.get_metric_history(run.info.run_id, f"trajectory/{name}"), key=lambda m: m.step)
            assert [m.step for m in history] == [0, 5, 10]
            assert [m.value for m in history] == pytest.approx([p[name] for p in traced.points])
        epochs = client.get_metric_history(run.info.run_id, "trajectory/epoch")
        assert sorted((m.step, m.value) for m in epochs) == [(0, 0.0), (5, 1.0), (10, 2.0)]
    finally:
        mlflow.set_tracking_uri(previous)


@pytest.mark.parametrize(
    ("trajectory_params", "message"),
    [
        ({"every": "epochs"}, "unlearn.trajectory.every: expected 'epoch', .* got 'epochs' \\(did you mean 'epoch'"),
        ({"every": 0}, "unlearn.trajectory.every: expected an integer >= 1 or null, got 0"),
        ({"every": 2.5}, "unlearn.trajectory.every: expected an integer >= 1 or null, got 2.5"),
        ({"every": True}, "unlearn.trajectory.every: expected an integer >= 1 or null, got True"),
        (
            {"every": "epoch", "metrics": ["forget_truth_ration"]},
            "unlearn.trajectory.metrics: unknown metric\\(s\\) \\['forget_truth_ration'\\] \\(did you mean "
            "'forget_truth_ratio'",
        ),
        ({"metrics": ["rouge"]}, "unlearn.trajectory.metrics: unknown metric"),  # checked even while off
        ({"every": "epoch", "metrics": []}, "unlearn.trajectory.metrics: every='epoch' evaluates nothing"),
        ({"every": "epoch", "metrics": ["mia_min_k"], "max_items": 0}, "unlearn.trajectory.max_items: expected an"),
        ({"metrcs": ["mia_min_k"]}, "unlearn.trajectory.metrcs: unknown key \\(did you mean 'metrics'\\?\\)"),
        (
            {"every": "epoch", "metrics": ["mia_min_k"], "launch": {"num_processes": 2}},
            "unlearn.trajectory.every: a launched training",
        ),
    ],
)
def test_bad_trajectory_settings_are_refused_naming_the_parameter(trajectory_params, message):
    settings = dict(trajectory_params)
    params = {**TRAINING, "launch": settings.pop("launch", None), "trajectory": settings}
    with pytest.raises(ParameterError, match=message):
        UnlearnConfig.from_params(params)
    with pytest.raises(ParameterError, match="benchmark.methods.npo.trajectory"):  # a benchmark method's, by name
        UnlearnConfig.from_params(params, "benchmark.methods.npo")


def test_a_trajectory_that_is_not_a_block_is_refused():
    with pytest.raises(
        ParameterError, match="parameter unlearn.trajectory: expected a mapping of settings, got 'epoch'"
    ):
        UnlearnConfig.from_params({"trajectory": "epoch"})


def test_metrics_the_sets_or_the_reference_cannot_serve_are_refused_before_training(tiny_model_dir, sets, small_world):
    with pytest.raises(ValueError, match="unlearn.trajectory.metrics: 'ra_Q_A_Prob_normalised' needs the evaluation"):
        trajectory(sets, metrics=["ra_Q_A_Prob_normalised"])  # no real-authors set here
    with pytest.raises(ParameterError, match=r"unlearn.trajectory.metrics: \['forget_quality'\] compare with"):
        trajectory(sets, metrics=["forget_quality"])  # no retain reference given
    tokenizer = load_causal_lm(str(tiny_model_dir)).tokenizer
    reference = RetainReference("forget10", "retain", tokenizer_fingerprint(tokenizer), [0.5] * 40, 0.5)
    with pytest.raises(ValueError, match="forget split 'forget10', this evaluation uses 'forget05'"):
        Trajectory(
            TrajectoryConfig(every="epoch", metrics=["forget_quality"], max_items=6), sets, EVALUATE,
            reference=reference, forget_split="forget05", tokenizer=tokenizer,
        )  # fmt: skip


def test_teacher_forced_metrics_score_every_item_and_generation_only_the_first_max_items(tiny_model_dir, sets, caplog):
    """forget_quality and privleak compare the final evaluation's items with the retain model's (its last point is the
    final evaluation's number); the costly generations answer only the first `max_items` questions."""
    bundle = load_causal_lm(str(tiny_model_dir))
    reference = RetainReference("forget10", "retain", tokenizer_fingerprint(bundle.tokenizer), [0.5] * 40, 0.6)
    metrics = ["forget_quality", "privleak", "forget_Q_A_ROUGE"]
    traced = Trajectory(
        TrajectoryConfig(every="epoch", metrics=metrics, max_items=6), sets, EVALUATE,
        reference=reference, forget_split="forget10", tokenizer=bundle.tokenizer, track=False,
    )  # fmt: skip
    with caplog.at_level("INFO"):
        point = traced.measure(bundle.model, bundle.tokenizer, step=0, epoch=0.0)
    assert list(point) == ["step", "epoch", *metrics]
    assert 0 <= point["forget_quality"] <= 1 and -100 <= point["privleak"] <= 100
    assert "scoring 280 candidate answers of 'forget'" in caplog.messages  # 40 items: answer, paraphrase, 5 wrong
    assert "scoring 40 candidate answers of 'holdout'" in caplog.messages
    assert "generating answers for 6 questions of 'forget'" in caplog.messages
    with pytest.raises(ValueError, match="30 forget items, this evaluation has 40"):
        Trajectory(
            TrajectoryConfig(every="epoch", metrics=["forget_quality"]), sets, EVALUATE,
            reference=RetainReference("forget10", "retain", None, [0.5] * 30, None), tokenizer=bundle.tokenizer,
        )  # fmt: skip
