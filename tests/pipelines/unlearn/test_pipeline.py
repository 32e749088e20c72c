import logging

import pytest
import transformers
from datasets import Dataset, DatasetDict
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.models.loading import ModelBundle, load_causal_lm
from flat_pipeline.pipelines.unlearn import create_pipeline

UNLEARN = {
    "divergence": "kl",
    "score": "logprob",
    "learning_rate": 1e-3,
    "num_train_epochs": 1,
    "per_device_train_batch_size": 8,
    "logging_steps": 1,
}
EVALUATE = {
    "sets": {"retain": "retain_perturbed"},
    "metrics": ["forget_truth_ratio"],
    "settings": {"max_new_tokens": 8},
}


@pytest.fixture
def forget_templates(small_world):
    rows = small_world["forget05_perturbed"]
    return Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "forget_answer": [r["answer"] for r in rows],
            "template_answers": [["I don't know.", "No idea."]] * len(rows),
        }
    )


def unlearn_catalog(original, forget_templates, small_world, unlearn, evaluate=EVALUATE):
    """What `kedro run --pipelines unlearn` loads: the original model, data_prep's and templates' sets, parameters."""
    splits = DatasetDict({name: Dataset.from_list(rows) for name, rows in small_world.items()})
    return DataCatalog(
        {
            "original_model": MemoryDataset(original, copy_mode="assign"),
            "forget_templates": MemoryDataset(forget_templates),
            "retain_set": MemoryDataset(Dataset.from_dict({"question": ["Q?"], "answer": ["A."]})),
            "benchmark_splits": MemoryDataset(splits, copy_mode="assign"),
            "forget_set": MemoryDataset(splits["forget05_perturbed"], copy_mode="assign"),
            "holdout_set": MemoryDataset(splits["holdout05"], copy_mode="assign"),
            "params:model": MemoryDataset({"prompt": {"format": "phi-1_5"}}),
            "params:unlearn": MemoryDataset(unlearn),
            "params:templates": MemoryDataset({"pairing": "resample"}),
            "params:evaluate": MemoryDataset(evaluate),
            "params:data_prep": MemoryDataset({"forget_split": "forget05"}),
            "unlearned_model": MemoryDataset(copy_mode="assign"),
        }
    )


def test_the_unlearn_pipeline_loads_what_data_prep_templates_and_finetune_saved():
    """No retain model's evaluation (retain_reference) is needed: `kedro run --pipelines unlearn` runs after
    `data_prep,templates,finetune` alone, trajectory or not."""
    assert create_pipeline().inputs() == {
        "original_model", "forget_templates", "retain_set", "benchmark_splits", "forget_set", "holdout_set",
        "params:model", "params:unlearn", "params:templates", "params:evaluate", "params:data_prep",
    }  # fmt: skip


def test_flat_builds_no_model_of_its_own(tiny_model_dir, forget_templates, small_world, monkeypatch):
    """FLAT needs no reference model and no retain data: the only model is the one it unlearns."""
    built = []
    original_init = transformers.PreTrainedModel.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        original_init(self, *args, **kwargs)

    original = load_causal_lm(str(tiny_model_dir))
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", counting_init)
    catalog = unlearn_catalog(original, forget_templates, small_world, UNLEARN)
    SequentialRunner().run(create_pipeline(), catalog)
    assert built == []
    unlearned = catalog.load("unlearned_model")
    assert isinstance(unlearned, ModelBundle) and unlearned.model is original.model
    history = catalog.load("unlearn_metrics")
    assert {"unlearn_loss", "template_score", "forget_score"} <= set(history)
    assert len(history["unlearn_loss"]) == 3  # 20 items / 8 = 3 steps


def test_a_trajectory_adds_its_points_to_the_unlearning_history(tiny_model_dir, forget_templates, small_world):
    trajectory = {"every": "epoch", "metrics": ["forget_truth_ratio", "retain_Q_A_Prob", "mia_min_k"], "max_items": 5}
    catalog = unlearn_catalog(
        load_causal_lm(str(tiny_model_dir)), forget_templates, small_world, {**UNLEARN, "trajectory": trajectory}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    history = catalog.load("unlearn_metrics")
    for name in trajectory["metrics"]:
        assert [entry["step"] for entry in history[f"trajectory/{name}"]] == [0, 3]  # the start, then 1 epoch
    assert len(history["unlearn_loss"]) == 3


def test_the_evaluation_sets_are_built_only_for_a_trajectory(tiny_model_dir, forget_templates, small_world, caplog):
    # evaluate.sets names a split the benchmark lacks: building the sets fails, so an unlearning without a
    # trajectory, which reads none of them, must not build them
    evaluate = {**EVALUATE, "sets": {"retain": "no_such_split"}}
    catalog = unlearn_catalog(load_causal_lm(str(tiny_model_dir)), forget_templates, small_world, UNLEARN, evaluate)
    with caplog.at_level(logging.INFO):
        SequentialRunner().run(create_pipeline(), catalog)
    assert len(catalog.load("unlearn_metrics")["unlearn_loss"]) == 3
    assert not [message for message in caplog.messages if message.startswith("evaluation sets:")]
    trajectory = {"every": "epoch", "metrics": ["forget_truth_ratio"]}
    catalog = unlearn_catalog(
        load_causal_lm(str(tiny_model_dir)), forget_templates, small_world, {**UNLEARN, "trajectory": trajectory},
        evaluate,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"^parameter evaluate.sets: split\(s\) \['no_such_split'\] not in the"):
        SequentialRunner().run(create_pipeline(), catalog)
    assert "unlearned_model" not in catalog or not catalog.exists("unlearned_model")  # refused before training
