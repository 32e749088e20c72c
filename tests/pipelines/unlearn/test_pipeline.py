import pytest
import transformers
from datasets import Dataset
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


def test_flat_builds_no_model_of_its_own(tiny_model_dir, forget_templates, monkeypatch):
    """FLAT needs no reference model and no retain data: the only model is the one it unlearns."""
    built = []
    original_init = transformers.PreTrainedModel.__init__

    def counting_init(self, *args, **kwargs):
        built.append(type(self).__name__)
        original_init(self, *args, **kwargs)

    original = load_causal_lm(str(tiny_model_dir))
    monkeypatch.setattr(transformers.PreTrainedModel, "__init__", counting_init)
    catalog = DataCatalog(
        {
            "original_model": MemoryDataset(original, copy_mode="assign"),
            "forget_templates": MemoryDataset(forget_templates),
            "retain_set": MemoryDataset(Dataset.from_dict({"question": ["Q?"], "answer": ["A."]})),
            "params:model": MemoryDataset({"prompt": {"format": "phi-1_5"}}),
            "params:unlearn": MemoryDataset(UNLEARN),
            "params:templates": MemoryDataset({"pairing": "resample"}),
            "unlearned_model": MemoryDataset(copy_mode="assign"),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    assert built == []
    unlearned = catalog.load("unlearned_model")
    assert isinstance(unlearned, ModelBundle) and unlearned.model is original.model
    history = catalog.load("unlearn_metrics")
    assert {"unlearn_loss", "template_score", "forget_score"} <= set(history)
    assert len(history["unlearn_loss"]) == 3  # 20 items / 8 = 3 steps
