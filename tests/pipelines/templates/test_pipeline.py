import pytest
from datasets import Dataset
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.pipelines.templates import create_pipeline
from flat_pipeline.pipelines.templates.nodes import build_forget_templates
from flat_pipeline.templates import builtin_templates

PARAMS = {"source": "idk", "candidates_per_item": 4, "pairing": "fixed", "seed": 0, "file": None, "generated": {}}


def test_pipeline_pairs_every_forget_item_with_template_candidates(small_world):
    forget = Dataset.from_list(small_world["forget10_perturbed"])
    catalog = DataCatalog(
        {
            "forget_set": MemoryDataset(forget),
            "params:templates": MemoryDataset(PARAMS),
            "params:model": MemoryDataset({"dtype": "float32"}),
            "base_model@folder": MemoryDataset(None),  # no base model saved: idk templates need none
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    templates = catalog.load("forget_templates")
    assert templates["prompt"] == forget["question"] and templates["forget_answer"] == forget["answer"]
    pool = set(builtin_templates("idk"))
    assert all(len(c) == 4 and set(c) <= pool for c in templates["template_answers"])


def test_forget_set_without_questions_is_refused():
    with pytest.raises(ValueError, match=r"forget_set.*'question'"):
        build_forget_templates(Dataset.from_dict({"text": ["raw document"]}), PARAMS)


def test_generated_templates_without_a_model_or_a_saved_base_model_name_both(small_world):
    forget = Dataset.from_list(small_world["forget10_perturbed"])
    generated = {**PARAMS, "source": "generated", "generated": {"model": None}}
    expected = r"templates.generated.model: null means the run's base model .* none is saved"
    with pytest.raises(ValueError, match=expected):
        build_forget_templates(forget, generated, {"dtype": "float32"}, None)
