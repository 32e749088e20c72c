"""The unlearn node on its own: what it logs when it starts, and no warning of its own on CPU."""

from __future__ import annotations

import logging
import warnings

import torch
from datasets import Dataset

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.pipelines.unlearn.nodes import unlearn_model


def test_the_node_logs_its_settings_in_one_line_and_trains_without_the_pin_memory_warning(
    tiny_model_dir, small_world, caplog
):
    rows = small_world["forget05_perturbed"]
    forget_templates = Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "forget_answer": [r["answer"] for r in rows],
            "template_answers": [["I don't know."]] * len(rows),
        }
    )
    unlearn = {"learning_rate": 1e-3, "num_train_epochs": 1, "per_device_train_batch_size": 8}
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        unlearn_model(
            load_causal_lm(str(tiny_model_dir)),
            forget_templates,
            Dataset.from_dict({"question": ["Q?"], "answer": ["A."]}),
            {"prompt": {"format": "phi-1_5"}},
            unlearn,
            {"pairing": "resample"},
        )
    expected = "unlearn starts: method=flat divergence=kl score=logprob learning_rate=0.001 epochs=1 batch_size=8"
    assert expected in caplog.messages
    if not torch.cuda.is_available():
        assert not [w for w in caught if "pin_memory" in str(w.message)]
