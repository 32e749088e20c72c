"""max_length is checked against the model, and a prompt too long for it names the item and the parameter (issue
25)."""

from __future__ import annotations

import re

import pytest
from datasets import Dataset

from flat_pipeline.config import ParameterError
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptTooLong
from flat_pipeline.training.finetune import FinetuneConfig, finetune
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn


def test_a_max_length_above_the_models_positions_is_refused_before_training(tiny_model_dir, small_world):
    bundle = load_causal_lm(str(tiny_model_dir))
    positions = bundle.model.config.max_position_embeddings
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in small_world["forget10"]])
    message = (
        rf"^parameter finetune.training.max_length: {positions + 1} is more tokens than the model has positions "
        rf"\({positions}, max_position_embeddings in its config.json\); set it to at most {positions}$"
    )
    with pytest.raises(ParameterError, match=message):
        finetune(bundle, rows, FinetuneConfig(max_length=positions + 1, num_train_epochs=1))


def test_a_prompt_too_long_for_max_length_names_its_split_row_and_the_parameter(tiny_model_dir, forget_templates):
    bundle = load_causal_lm(str(tiny_model_dir))
    rows = forget_templates.select(range(3))
    question = rows[2]["prompt"]
    long_rows = Dataset.from_list([*rows.select(range(2)).to_list(), {**rows[2], "prompt": question * 6}])
    config = UnlearnConfig(method="flat", max_length=40, num_train_epochs=1, per_device_train_batch_size=8)
    message = (
        rf"^forget set, row 2: the prompt of {re.escape(repr((question * 6)[:80]))} is (\d+) tokens, which leaves no "
        r"room for an answer within unlearn.max_length=40; raise unlearn.max_length to at least \d+ \(the model's "
        r"max_position_embeddings is the ceiling\), or shorten the question$"
    )
    with pytest.raises(PromptTooLong, match=message):
        unlearn(bundle, long_rows, config)
