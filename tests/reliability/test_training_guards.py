"""Trainings whose result would be garbage stop with an error that names the step and the parameter to change, so no
model is saved: a non-finite loss or gradient norm, a collapsed (uniform, dead) model, a finetune short of its
exact-match floor, out-of-range settings, and a resume into another training's checkpoints."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset

from flat_pipeline.config import ParameterError
from flat_pipeline.launch import LaunchSettings, raise_worker_error, record_worker_error
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.models.lora import LoraSettings
from flat_pipeline.training.finetune import FinetuneConfig, finetune, finetune_from_params
from flat_pipeline.training.fingerprint import (
    FINGERPRINT_FILE,
    CheckpointMismatch,
    checkpoint_to_resume,
    fingerprint,
    start_model_identity,
)
from flat_pipeline.training.guards import TrainingError, check_not_collapsed
from flat_pipeline.training.methods import METHODS
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

CONF = Path(__file__).resolve().parents[2] / "conf"
STEPS = {"num_train_epochs": 1, "per_device_train_batch_size": 8}  # 40 forget items: 5 steps


@pytest.fixture
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture(scope="module")
def qa_rows(small_world):
    return Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])


@pytest.fixture(scope="module")
def retain_rows(small_world):
    rows = small_world["retain90"][:40]
    return Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in rows])


class InfiniteGradient(torch.autograd.Function):
    """Identity forward, infinite backward: a finite loss with a non-finite gradient."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def poison_gradients(model):
    model.get_input_embeddings().register_forward_hook(lambda module, inputs, output: InfiniteGradient.apply(output))


def weights(model):
    return [p.detach().clone() for p in model.parameters()]


# ------------------------------------------------------------------------------------ non-finite loss / gradient


def test_a_diverging_finetune_stops_at_its_first_non_finite_step(bundle, qa_rows):
    # learning_rate 1e30: the first step sends the weights to ~1e30, the second step's gradient is NaN
    config = FinetuneConfig(learning_rate=1e30, warmup_steps=0, **STEPS)
    message = (
        r"^finetune: the gradient norm is nan at step 2 of 5 \(epoch 0.20\) \(the loss was finite\); stopping before "
        r"it reaches the weights, so no model is saved. Lower finetune.training.learning_rate \(now 1e\+30\)"
    )
    with pytest.raises(FloatingPointError, match=message):
        finetune(bundle, qa_rows, config)


def test_a_non_finite_finetune_loss_names_the_step(bundle, qa_rows):
    with torch.no_grad():
        bundle.model.get_input_embeddings().weight[:, 0] = float("nan")
    message = r"^finetune: the training loss is nan at step 1 of 5 \(epoch 0.00\); stopping before it reaches the"
    with pytest.raises(FloatingPointError, match=message):
        finetune(bundle, qa_rows, FinetuneConfig(**STEPS))


def test_a_non_finite_finetune_gradient_never_reaches_the_weights(bundle, qa_rows):
    before = weights(bundle.model)
    poison_gradients(bundle.model)
    with pytest.raises(FloatingPointError, match=r"^finetune: the gradient norm is (nan|inf) at step 1 of 5"):
        finetune(bundle, qa_rows, FinetuneConfig(**STEPS))
    assert all(torch.equal(a, b) for a, b in zip(before, weights(bundle.model), strict=True))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_unlearning_method_stops_on_a_non_finite_gradient(method, bundle, forget_templates, retain_rows):
    poison_gradients(bundle.model)
    config = UnlearnConfig(method=method, **STEPS)
    message = (
        rf"^unlearn \({method}\): the gradient norm is (nan|inf) at step 1 of 5 \(epoch 0.00\) \(the loss was "
        r"finite\); stopping before it reaches the weights, so no model is saved. Lower unlearn.learning_rate"
    )
    with pytest.raises(FloatingPointError, match=message):
        unlearn(bundle, forget_templates, config, retain_rows=retain_rows)


def test_flat_with_probability_scores_also_suggests_logprob(bundle, forget_templates):
    poison_gradients(bundle.model)
    with pytest.raises(FloatingPointError, match=r"or set unlearn.score=logprob \(FLAT's probability scores"):
        unlearn(bundle, forget_templates, UnlearnConfig(score="prob", **STEPS))


# --------------------------------------------------------------------------------------------------- collapse


def test_a_finetune_that_collapses_to_uniform_output_stops_at_the_end_of_that_epoch(bundle, qa_rows, tmp_path):
    # learning_rate 1e3 (measured): two huge steps, then loss = ln 1024 with gradient norm 0 for every later step;
    # the check at the end of epoch 1 stops it there, 10 of 20 steps early, before that epoch's checkpoint
    # (the divergence guards, which stop it at step 2, are set out of the way)
    config = FinetuneConfig(
        learning_rate=1e3, warmup_steps=0, num_train_epochs=4, per_device_train_batch_size=8, output_dir=str(tmp_path),
        divergence_factor=1e30, loss_limit=1e30,
    )  # fmt: skip
    message = (
        r"^finetune: the model has collapsed by the end of epoch 1 of 4 \(step 5 of 20\): on 8 of its training inputs "
        r"it predicts the uniform distribution over all 1024 tokens \(mean entropy 6.9315 nats, ln 1024 = 6.9315\) "
        r"and its last gradient norm is 0, so no further step can move it; training stops here and no model is "
        r"saved. Lower finetune.training.learning_rate \(now 1000\)"
    )
    with pytest.raises(TrainingError, match=message):
        finetune(bundle, qa_rows, config)
    assert not list(tmp_path.glob("checkpoint-*"))


def test_a_finetune_whose_loss_leaves_the_sane_range_stops_naming_step_and_learning_rate(bundle, qa_rows, tmp_path):
    config = FinetuneConfig(
        learning_rate=1e3, warmup_steps=0, num_train_epochs=4, per_device_train_batch_size=8, output_dir=str(tmp_path)
    )
    message = (
        r"^finetune: the training diverged at step 2 of 20 \(epoch 0.20\): the loss is [0-9.e+]+, beyond "
        r"finetune.training.loss_limit = 1000, at learning rate 994; stopping before it reaches the weights"
    )
    with pytest.raises(FloatingPointError, match=message):
        finetune(bundle, qa_rows, config)


def test_flat_at_learning_rate_10_stops_at_the_step_its_loss_leaves_the_sane_range(bundle, forget_templates):
    """The issue's run: FLAT at learning rate 10, all finite (on this model: loss 7, then 1255 at step 2)."""
    config = UnlearnConfig(method="flat", learning_rate=10.0, num_train_epochs=5, per_device_train_batch_size=8)
    message = (
        r"^unlearn \(flat\): the training diverged at step 2 of 25 \(epoch 0.20\) \(\{'template_score': -1254.871, "
        r"'forget_score': -1416.6469\}\): the loss is 1255, beyond "
        r"unlearn.loss_limit = 1000, at learning rate 10; stopping before it reaches the weights, so no model is "
        r"saved. Lower unlearn.learning_rate"
    )
    with pytest.raises(FloatingPointError, match=message):
        unlearn(bundle, forget_templates, config)


def test_a_gradient_norm_growing_over_its_running_median_stops_the_training(bundle, forget_templates):
    # learning rate 100, the limit out of the way: gradient norms 2, 9e4, 5e5, 8e5, then 2.4e6 at step 5, 7.8 times
    # the median of the four before it
    config = UnlearnConfig(
        method="flat", learning_rate=100.0, num_train_epochs=5, per_device_train_batch_size=8, divergence_factor=5.0,
        loss_limit=1e30,
    )  # fmt: skip
    message = (
        r"^unlearn \(flat\): the training diverged at step 5 of 25 \(epoch 0.80\): the gradient norm is 2.364e\+06, "
        r"7.8 times its running median [0-9.e+]+ \(unlearn.divergence_factor = 5\) at learning rate 100; "
        r"stopping before it reaches the weights"
    )
    with pytest.raises(FloatingPointError, match=message):
        unlearn(bundle, forget_templates, config)


def test_the_epoch_end_collapse_check_runs_no_forward_while_the_gradient_is_non_zero(bundle, qa_rows):
    # the check reads the last gradient norm, which the gradient guard already has; a forward (the model in eval
    # mode) would cost a 7B model a pass over its sample at every epoch end
    evaluated = []
    bundle.model.register_forward_hook(lambda module, inputs, output: evaluated.append(not module.training))
    _, history = finetune(bundle, qa_rows, FinetuneConfig(num_train_epochs=3, per_device_train_batch_size=8))
    assert all(entry["value"] > 0 for entry in history["grad_norm"])
    assert len(evaluated) == 15 and not any(evaluated)  # 15 training forwards, no other


def test_the_check_at_the_end_of_training_names_the_trained_model(bundle, qa_rows):
    # what the launching process checks after a launched training (each process checks its epochs itself)
    ids = [bundle.tokenizer(row["question"])["input_ids"] for row in qa_rows.select(range(8))]
    dead(bundle.model)
    message = (
        r"^test: the trained model has collapsed: on 8 of its training inputs it predicts the uniform distribution "
        r"over all 1024 tokens \(mean entropy 6.9315 nats, ln 1024 = 6.9315\) and its last gradient norm is 0, so "
        r"no further step can move it; it is not saved. Lower it.$"
    )
    with pytest.raises(TrainingError, match=message):
        check_not_collapsed(bundle.model, ids, bundle.tokenizer.pad_token_id, 0.0, job="test", remedy="Lower it.")


def dead(model):
    """Zero embeddings (tied to the LM head): every hidden state and logit is 0, every gradient of the output too."""
    with torch.no_grad():
        model.get_input_embeddings().weight.zero_()


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"rmu"}))
def test_every_unlearning_method_stops_a_collapsed_model_after_its_first_epoch(
    method, bundle, forget_templates, retain_rows
):
    dead(bundle.model)
    message = (
        rf"^unlearn \({method}\): the model has collapsed by the end of epoch 1 of 3 \(step 5 of 15\): on 8 of its "
        r"training inputs it predicts the uniform distribution over all 1024 tokens"
    )
    config = UnlearnConfig(method=method, **{**STEPS, "num_train_epochs": 3})
    with pytest.raises(TrainingError, match=message):
        unlearn(bundle, forget_templates, config, retain_rows=retain_rows)


def test_rmu_revives_a_dead_model_and_is_not_reported(bundle, forget_templates, retain_rows):
    # RMU's loss is on hidden states: through the residual stream the embeddings get a gradient, so the model moves
    dead(bundle.model)
    _, history = unlearn(bundle, forget_templates, UnlearnConfig(method="rmu", **STEPS), retain_rows=retain_rows)
    assert history["grad_norm"][-1]["value"] > 0


def test_the_collapse_check_needs_both_uniform_output_and_zero_gradient(bundle, qa_rows):
    ids = [bundle.tokenizer(row["question"])["input_ids"] for row in qa_rows.select(range(8))]
    pad = bundle.tokenizer.pad_token_id
    check_not_collapsed(bundle.model, ids, pad, 0.0, job="test", remedy="")  # fresh random model: 0.006 nats below
    dead(bundle.model)
    check_not_collapsed(bundle.model, ids, pad, 0.3, job="test", remedy="")  # uniform, but still trainable
    with pytest.raises(TrainingError, match=r"^test: the trained model has collapsed"):
        check_not_collapsed(bundle.model, ids, pad, 0.0, job="test", remedy="")


# --------------------------------------------------------------------------------------- exact-match floor


def test_a_finetune_below_its_exact_match_floor_fails(tiny_model_dir, qa_rows):
    model = {"source": "pretrained", "name_or_path": str(tiny_model_dir)}
    params = {"min_train_exact_match": 0.5, "training": {"learning_rate": 5e-3, **STEPS}}
    message = (
        r"^finetune: teacher-forced exact match on its own training QA is 0.0000, below "
        r"finetune.min_train_exact_match = 0.5: the model has not learnt its training data, so it is not saved. "
        r"Train longer \(finetune.training.num_train_epochs, now 1\) or change finetune.training.learning_rate "
        r"\(now 0.005; too high diverges, too low learns slowly\); or lower finetune.min_train_exact_match \(null "
        r"turns the check off\).$"
    )
    with pytest.raises(TrainingError, match=message):
        finetune_from_params(qa_rows, None, model, params)
    with pytest.raises(ParameterError, match=r"^parameter finetune.min_train_exact_match: expected a finite number"):
        finetune_from_params(qa_rows, None, model, {**params, "min_train_exact_match": 1.5})


def test_only_the_embedded_worlds_set_an_exact_match_floor():
    def floor(env):
        return yaml.safe_load((CONF / env / "parameters_finetune.yml").read_text())["finetune"]

    assert floor("base")["min_train_exact_match"] == 0.8
    assert floor("test")["min_train_exact_match"] == 0.8  # the 20-author test world memorises too
    for env in ("tofu", "muse_news", "muse_books", "hp"):
        assert "min_train_exact_match" in floor(env) and floor(env)["min_train_exact_match"] is None


# ------------------------------------------------------------------------------------------------ range checks


BUILDERS = {
    "finetune": FinetuneConfig.from_params,
    "unlearn": UnlearnConfig.from_params,
    "benchmark": lambda params: UnlearnConfig.from_params(params, "benchmark.methods.npo"),
    "lora": lambda params: LoraSettings.from_params(params, "finetune"),
    "launch": lambda params: LaunchSettings.from_params(params, "finetune"),
}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("finetune", {"learning_rate": 0}, "finetune.training.learning_rate: expected a finite number > 0, got 0"),
        (
            "finetune",
            {"learning_rate": -1e-3},
            "finetune.training.learning_rate: expected a finite number > 0, got -0.001",
        ),
        (
            "finetune",
            {"learning_rate": float("nan")},
            "finetune.training.learning_rate: expected a finite number > 0, got nan",
        ),
        (
            "finetune",
            {"num_train_epochs": 0},
            "finetune.training.num_train_epochs: expected a finite number > 0, got 0",
        ),
        (
            "finetune",
            {"per_device_train_batch_size": 0},
            "finetune.training.per_device_train_batch_size: expected an integer >= 1, got 0",
        ),
        (
            "finetune",
            {"gradient_accumulation_steps": 1.5},
            "finetune.training.gradient_accumulation_steps: expected an integer >= 1, got 1.5",
        ),
        (
            "finetune",
            {"adam_beta2": 1.0},
            "finetune.training.adam_beta2: expected a finite number >= 0 and < 1, got 1.0",
        ),
        (
            "finetune",
            {"min_lr_rate": 2},
            "finetune.training.min_lr_rate: expected a finite number >= 0 and <= 1, got 2",
        ),
        (
            "finetune",
            {"warmup_steps": 2.5},
            "finetune.training.warmup_steps: expected a share in [0, 1) or a whole number of steps, got 2.5",
        ),
        ("finetune", {"max_grad_norm": -1}, "finetune.training.max_grad_norm: expected a finite number >= 0, got -1"),
        (
            "finetune",
            {"lr_scheduler_type": "cosine_min"},
            "finetune.training.lr_scheduler_type: expected one of linear, cosine, ",
        ),
        ("unlearn", {"learning_rate": 0}, "unlearn.learning_rate: expected a finite number > 0, got 0"),
        ("unlearn", {"weight_decay": -0.1}, "unlearn.weight_decay: expected a finite number >= 0, got -0.1"),
        ("unlearn", {"logging_steps": 0}, "unlearn.logging_steps: expected an integer >= 1, got 0"),
        ("unlearn", {"retain_weight": float("inf")}, "unlearn.retain_weight: expected a finite number >= 0, got inf"),
        ("unlearn", {"rmu_layer": -1}, "unlearn.rmu_layer: expected an integer >= 0, got -1"),
        (
            "unlearn",
            {"lr_scheduler_type": "cosine_with_min_lr"},
            "unlearn.lr_scheduler_type: 'cosine_with_min_lr' needs a min_lr_rate, which unlearn has no setting for",
        ),
        ("unlearn", {"lora": {"alpha": 0}}, "unlearn.lora.alpha: expected a finite number > 0, got 0"),
        ("unlearn", {"launch": {"num_processes": 0}}, "unlearn.launch.num_processes: expected an integer >= 1, got 0"),
        ("benchmark", {"beta": 0}, "benchmark.methods.npo.beta: expected a finite number > 0, got 0"),
        ("lora", {"dropout": 1.0}, "finetune.lora.dropout: expected a finite number >= 0 and < 1, got 1.0"),
        ("lora", {"r": 0}, "finetune.lora.r: expected an integer >= 1, got 0"),
        (
            "launch",
            {"main_process_port": 0},
            "finetune.launch.main_process_port: expected an integer >= 1 and <= 65535, got 0",
        ),
    ],
)
def test_out_of_range_settings_are_refused_with_the_parameter_name(kind, params, message):
    with pytest.raises(ParameterError, match="^parameter " + re.escape(message)):
        BUILDERS[kind](params)


# ----------------------------------------------------------------------------------------------------- resume


def test_a_run_does_not_resume_another_trainings_checkpoint(tmp_path, tiny_model_dir, forget_templates):
    folder = tmp_path / "unlearn"
    unlearn(load_causal_lm(str(tiny_model_dir)), forget_templates, UnlearnConfig(output_dir=str(folder), **STEPS))
    assert (folder / "checkpoint-5").is_dir() and (folder / FINGERPRINT_FILE).is_file()
    message = (
        rf"^unlearn.output_dir {folder} holds checkpoint-5 of another training; resuming it would continue that run. "
        r"Differences \(checkpoint -> this run\): method: 'flat' -> 'ga'; the training data differ \(rows, tokenizer, "
        rf"prompt format or max_length\). Set unlearn.output_dir to another folder, or unlearn.resume=false to start "
        rf"over in {folder} \(its checkpoints are deleted\).$"
    )
    ga = UnlearnConfig(method="ga", output_dir=str(folder), **STEPS)
    with pytest.raises(CheckpointMismatch, match=message):
        unlearn(load_causal_lm(str(tiny_model_dir)), forget_templates, ga)


def whole_checkpoint(folder: Path) -> Path:
    """A checkpoint folder as the Trainer leaves it once written: weights and, last, trainer_state.json."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "trainer_state.json").write_text('{"global_step": 1}')
    return folder


def test_resume_is_refused_without_a_fingerprint_or_for_another_start_model(tmp_path):
    current = {"config": {"learning_rate": 1e-4}, "training_data": "sha256:a", "start_model": "loaded from /models/a"}
    whole_checkpoint(tmp_path / "checkpoint-7")
    missing = (
        rf"^unlearn.output_dir {tmp_path} holds checkpoint-7 but no fingerprint.json saying which configuration, "
        r"data and start model made it, so it cannot be resumed safely. Set unlearn.output_dir to another folder"
    )
    with pytest.raises(CheckpointMismatch, match=missing):
        checkpoint_to_resume(str(tmp_path), True, current, "unlearn")
    # resume=false starts over: old checkpoints deleted, this run's fingerprint written
    assert checkpoint_to_resume(str(tmp_path), False, current, "unlearn") is None
    assert not (tmp_path / "checkpoint-7").exists()
    assert json.loads((tmp_path / FINGERPRINT_FILE).read_text()) == current
    whole_checkpoint(tmp_path / "checkpoint-9")
    assert checkpoint_to_resume(str(tmp_path), True, current, "unlearn") == str(tmp_path / "checkpoint-9")
    other = {**current, "start_model": "loaded from /models/b"}
    with pytest.raises(CheckpointMismatch, match=r"the start model differs: loaded from /models/a -> loaded from "):
        checkpoint_to_resume(str(tmp_path), True, other, "finetune.training")


def test_the_start_model_is_known_by_its_weight_files_not_its_folder(tmp_path, tiny_model_dir):
    """Each run saves its base model as a new catalog version: a killed finetune's rerun loads the same weights from
    another folder and must resume; other weights must not."""
    copy = tmp_path / "2026-12-08T00.00.00.000Z" / "base_model"
    shutil.copytree(tiny_model_dir, copy)
    first, again = load_causal_lm(str(tiny_model_dir)), load_causal_lm(str(copy))
    assert start_model_identity(first) == start_model_identity(again)
    assert start_model_identity(first).startswith("weight files sha256:")
    with torch.no_grad():
        again.model.lm_head.weight.add_(1.0)
    again.model.save_pretrained(copy)
    assert start_model_identity(load_causal_lm(str(copy))) != start_model_identity(first)


def test_a_checkpoint_of_a_two_process_training_is_not_resumed_by_one_process(tmp_path, monkeypatch):
    # the process count changes the effective batch, so the steps and the schedule: a launched process (WORLD_SIZE
    # set by accelerate launch, its config's `launch` block unset) fingerprints what it runs in
    settings = {"learning_rate": 1e-4, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 2}
    data = {"forget": Dataset.from_dict({"input_ids": [[5, 6, 7]]})}
    monkeypatch.setenv("WORLD_SIZE", "2")
    launched = fingerprint({**settings, "launch": None}, data, "loaded from /models/a")
    assert checkpoint_to_resume(str(tmp_path), True, launched, "unlearn") is None  # starts, writes its fingerprint
    whole_checkpoint(tmp_path / "checkpoint-5")
    assert checkpoint_to_resume(str(tmp_path), True, launched, "unlearn") == str(tmp_path / "checkpoint-5")
    monkeypatch.delenv("WORLD_SIZE")
    single = fingerprint({**settings, "launch": {"num_processes": 1}}, data, "loaded from /models/a")
    message = (
        r"holds checkpoint-5 of another training; resuming it would continue that run. Differences \(checkpoint -> "
        r"this run\): effective_batch_size: 32 -> 16; num_processes: 2 -> 1. Set unlearn.output_dir"
    )
    with pytest.raises(CheckpointMismatch, match=message):
        checkpoint_to_resume(str(tmp_path), True, single, "unlearn")


# ------------------------------------------------------------------------------------------ launched processes


def test_a_launched_process_error_is_raised_again_with_its_type_and_message(tmp_path):
    record_worker_error(tmp_path, 1, TrainingError("finetune: the trained model has collapsed"))
    message = r"^finetune: the trained model has collapsed \[in launched process 1 of finetune\]$"
    with pytest.raises(TrainingError, match=message):
        raise_worker_error("finetune", tmp_path, 1, ["accelerate", "launch"])


@pytest.mark.slow
def test_a_launched_finetune_reports_its_guard(tiny_model_dir, qa_rows):
    model = {"source": "pretrained", "name_or_path": str(tiny_model_dir)}
    params = {
        "training": {"learning_rate": 1e30, "warmup_steps": 0, "num_train_epochs": 1, "per_device_train_batch_size": 4},
        "launch": {"num_processes": 2, "main_process_port": 29533},
    }
    with pytest.raises(FloatingPointError, match=r"^finetune: the gradient norm is nan at step 2 of 5 .*\[in launched"):
        finetune_from_params(qa_rows, None, model, params)


@pytest.mark.slow
def test_a_launched_finetune_stops_at_the_end_of_the_epoch_it_collapses_in(tiny_model_dir, qa_rows):
    # DDP: every process holds the whole model and sees the same reduced gradient norm, so all check and stop together
    model = {"source": "pretrained", "name_or_path": str(tiny_model_dir)}
    params = {
        "training": {
            "learning_rate": 1e3,
            "warmup_steps": 0,
            "num_train_epochs": 3,
            "per_device_train_batch_size": 4,
            "divergence_factor": 1e30,
            "loss_limit": 1e30,
        },  # the collapse check, not the divergence guards
        "launch": {"num_processes": 2, "main_process_port": 29534},
    }
    message = r"^finetune: the model has collapsed by the end of epoch 1 of 3 \(step 5 of 15\): .*\[in launched"
    with pytest.raises(TrainingError, match=message):
        finetune_from_params(qa_rows, None, model, params)
