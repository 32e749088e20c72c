"""Multi-process training through `accelerate launch`: two CPU processes (gloo) with half the per-device batch follow
the one-process loss curve and end at the same weights.

Tolerance: 1e-4 on every logged loss and every weight. The two runs see the same examples in the same steps. In
finetuning only the order of floating-point sums differs (the loss is normalised by the tokens of the whole step). The
unlearning losses are per-device means (NPO's over sequences, the retain NLL over tokens), so with two processes the
step's loss is the mean of two half-batch means: measured within 1.5e-4 relative, checked at 5e-4."""

from __future__ import annotations

import ast
import inspect

import pytest
import torch
from datasets import Dataset

import flat_pipeline.launch
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.training.finetune import finetune_from_params
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

TOLERANCE = 1e-4


def test_launch_imports_nothing_of_training():
    """training decides to launch and imports launch; the launched worker (training.worker) imports training: no
    circle."""
    tree = ast.parse(inspect.getsource(flat_pipeline.launch))
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [name for name in imported if name and name.startswith("flat_pipeline.training")]


def curve(history, key):
    return [p["value"] for p in history[key]]


@pytest.mark.slow
def test_two_processes_finetune_like_one_at_the_same_effective_batch(tiny_model_dir, small_world):
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])
    model = {"source": "pretrained", "name_or_path": str(tiny_model_dir)}
    training = {"learning_rate": 5e-3, "num_train_epochs": 2, "logging_steps": 1, "group_by_length": False}
    # one setting for both: 8 examples a step, however many processes share them (issue 27)
    training = {**training, "effective_batch_size": 8, "per_device_train_batch_size": 8}
    one, one_history = finetune_from_params(rows, None, model, {"training": training})
    two, two_history = finetune_from_params(
        rows, None, model, {"training": training, "launch": {"num_processes": 2, "main_process_port": 29531}}
    )
    assert len(curve(one_history, "train_loss")) == 10  # 40 rows / 8 a step x 2 epochs
    assert curve(two_history, "train_loss") == pytest.approx(curve(one_history, "train_loss"), abs=TOLERANCE)
    for a, b in zip(one.model.parameters(), two.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=TOLERANCE)
    assert two_history["train_exact_match"][0]["value"] == pytest.approx(one_history["train_exact_match"][0]["value"])


@pytest.mark.slow
def test_two_processes_unlearn_like_one_at_the_same_effective_batch(tiny_model_dir, small_world):
    forget = small_world["forget10_perturbed"]
    rows = Dataset.from_dict(
        {
            "prompt": [r["question"] for r in forget],
            "forget_answer": [r["answer"] for r in forget],
            "template_answers": [["I don't know.", "No idea."]] * len(forget),
        }
    )
    retain = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["retain90"]])
    settings = {"method": "npo", "learning_rate": 1e-3, "num_train_epochs": 2, "effective_batch_size": 8}
    _, one_history = unlearn(load_causal_lm(str(tiny_model_dir)), rows, UnlearnConfig(**settings), retain_rows=retain)
    _, two_history = unlearn(
        load_causal_lm(str(tiny_model_dir)),
        rows,
        UnlearnConfig(**settings, launch={"num_processes": 2, "main_process_port": 29532}),
        retain_rows=retain,
    )
    # The loss curve only: Adam divides each update by the gradient's running scale, so for weights whose gradient
    # is near zero the tiny per-device differences change the update itself.
    assert curve(two_history, "unlearn_loss") == pytest.approx(curve(one_history, "unlearn_loss"), rel=5e-4)
