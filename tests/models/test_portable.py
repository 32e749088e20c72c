"""Saved model folders load with transformers 4.45 as they do with the pinned 5.x (`make_portable`).

The real check runs transformers 4.45.1 itself, from the side environment `make compat-env` builds (`make test` builds
it first): .venv-tf445 has its own transformers, tokenizers, huggingface_hub and safetensors, and .venv's torch.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.models.portable import make_portable, portable_config, portable_tokenizer_config
from tests.models.transformers_probe import observe

PROJECT = Path(__file__).resolve().parents[2]
COMPAT_PYTHON = PROJECT / ".venv-tf445" / "bin" / "python"
PROBE = Path(__file__).with_name("transformers_probe.py")
SENTENCE = "Where was the author born? <|reserved|> In Lagos, in 1950."
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}
CHAT_TEMPLATE = "{% for m in messages %}<|reserved|>{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}"


def tiny_llama3(tokenizer, rope_parameters=LLAMA3_ROPE):
    """A 1-layer Llama with Llama-3's rotary settings. Large initial weights: attention is sharp enough that a wrong
    rope_theta shows in the logits."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=131072,  # Llama-3.1's; above original_max_position_embeddings
        rope_parameters=dict(rope_parameters),
        initializer_range=0.5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def llama_tokenizer():
    """A 5.x LlamaTokenizer (byte-fallback BPE, Metaspace) that adds bos, as Llama-2's does."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁" + "".join(sorted(set(SENTENCE + "and a second one"))):
        vocab.setdefault(char, len(vocab))
    merges = [("▁", "a"), ("▁a", "n"), ("▁an", "d"), ("o", "n"), ("▁", "t"), ("▁t", "h"), ("▁th", "e")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, small_world):
    """(model folder written by HFModelDataset, tokenizer folder of a Llama tokenizer, the bundle saved)."""
    from flat_pipeline.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([f"{r['question']} {r['answer']}" for r in small_world["full"]], vocab_size=512)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|reserved|>"]})
    tokenizer.chat_template = CHAT_TEMPLATE
    bundle = ModelBundle(tiny_llama3(tokenizer), tokenizer)
    root = tmp_path_factory.mktemp("portable")
    HFModelDataset(filepath=str(root / "model")).save(bundle)
    llama_folder = root / "llama_tokenizer"
    llama_tokenizer().save_pretrained(llama_folder)
    make_portable(llama_folder)
    return root / "model", llama_folder, bundle


def test_a_saved_folder_loads_with_transformers_4_45_as_with_5(saved):
    model_folder, llama_folder, _ = saved
    if not COMPAT_PYTHON.is_file():
        pytest.fail(
            f"{COMPAT_PYTHON} is missing: build it with `make compat-env` (transformers 4.45.1 beside .venv, pins in "
            f"requirements-compat.txt; `make test` builds it first)"
        )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    result = subprocess.run(
        [str(COMPAT_PYTHON), str(PROBE), str(model_folder), str(llama_folder), SENTENCE],
        capture_output=True, text=True, timeout=300, check=False, env=env, cwd=model_folder,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    old = json.loads(result.stdout)
    new = observe(str(model_folder), str(llama_folder), SENTENCE)

    assert old.pop("version") == "4.45.1" and new.pop("version").startswith("5.")
    assert old.pop("tokenizer_class") == "PreTrainedTokenizerFast" and new.pop("tokenizer_class") == "TokenizersBackend"
    # 4.45's own Llama class, reading tokenizer.json as it is
    assert old.pop("llama_class") == "LlamaTokenizerFast" and new.pop("llama_class") == "LlamaTokenizer"
    old_logits, new_logits = torch.tensor(old.pop("logits")), torch.tensor(new.pop("logits"))
    assert torch.allclose(old_logits, new_logits, rtol=0, atol=1e-5), (old_logits - new_logits).abs().max()
    assert old == new  # token ids, decoding, special tokens, padding, chat template, input names
    assert new["ids"][0] == saved[2].tokenizer.bos_token_id and new["llama_ids"][0] == 1  # both add their bos


def test_the_check_would_see_4_45s_default_rope_theta(saved):
    """The Llama-3 rotary settings make a difference here: with 4.x's silent default (rope_theta 10000, no scaling)
    the logits move far beyond the tolerance above."""
    _, _, bundle = saved
    ids = torch.tensor([bundle.tokenizer(SENTENCE)["input_ids"]])
    default = tiny_llama3(bundle.tokenizer, {"rope_type": "default", "rope_theta": 10000.0})
    default.load_state_dict(bundle.model.state_dict())
    with torch.no_grad():
        assert (default(ids).logits - bundle.model(ids).logits).abs().max() > 1e-3


def test_the_5x_round_trip_stays_exact(saved):
    model_folder, _, bundle = saved
    loaded = HFModelDataset(filepath=str(model_folder)).load()
    tokenizer, reloaded = bundle.tokenizer, loaded.tokenizer
    assert reloaded(SENTENCE)["input_ids"] == tokenizer(SENTENCE)["input_ids"]
    assert reloaded.all_special_tokens == tokenizer.all_special_tokens
    assert reloaded.chat_template == tokenizer.chat_template and type(reloaded) is type(tokenizer)
    assert loaded.model.config.rope_parameters == bundle.model.config.rope_parameters
    ids = torch.tensor([tokenizer(SENTENCE)["input_ids"]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, bundle.model(ids).logits)


def test_rope_parameters_become_rope_theta_and_rope_scaling():
    config = {"model_type": "llama", "dtype": "bfloat16", "rope_parameters": dict(LLAMA3_ROPE)}
    out = portable_config(config)
    assert out["rope_theta"] == 500000.0 and out["torch_dtype"] == "bfloat16"
    assert out["rope_scaling"] == {
        "rope_type": "llama3",
        "factor": 32.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    assert out["rope_parameters"] == LLAMA3_ROPE and out["dtype"] == "bfloat16"  # 5.x's own keys stay
    plain = portable_config({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}})
    assert plain["rope_theta"] == 10000.0 and "rope_scaling" not in plain  # 5.x reads rope_scaling as rope_parameters
    nested = portable_config({"text_config": {"model_type": "llama", "dtype": "float16"}})
    assert nested["text_config"]["torch_dtype"] == "float16"


def test_tokenizer_config_names_a_class_4_45_knows_and_what_5x_left_to_its_class():
    bpe = {"model": {"type": "BPE"}, "post_processor": None}
    config = {
        "backend": "tokenizers",
        "tokenizer_class": "TokenizersBackend",
        "bos_token": "<bos>",
        "extra_special_tokens": ["<|reserved|>"],
        "clean_up_tokenization_spaces": True,  # 5.x skips the clean-up for BPE; 4.x would not
    }
    defaults = {"padding_side": "right", "model_input_names": ["input_ids", "attention_mask"]}
    out = portable_tokenizer_config(config, bpe, chat_template="{{ x }}", class_defaults=defaults)
    assert out["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert out["model_input_names"] == ["input_ids", "attention_mask"]  # 4.x's generic class adds token_type_ids
    assert out["additional_special_tokens"] == ["<|reserved|>"] and out["chat_template"] == "{{ x }}"
    assert out["clean_up_tokenization_spaces"] is False
    assert portable_tokenizer_config({**config, "padding_side": "left"}, bpe, None, defaults)["padding_side"] == "left"
    no_json = portable_tokenizer_config(config, None)  # a tokenizer without tokenizer.json: its class stays
    assert no_json["tokenizer_class"] == "TokenizersBackend"


def bos_template(bos: str | None) -> dict:
    def seq(name, type_id):
        return [
            *([{"SpecialToken": {"id": bos, "type_id": type_id}}] if bos else []),
            {"Sequence": {"id": name, "type_id": type_id}},
        ]

    return {"type": "TemplateProcessing", "single": seq("A", 0), "pair": seq("A", 0) + seq("B", 1)}


@pytest.mark.parametrize(
    ("extra", "post_processor", "expected"),
    [
        ({}, bos_template("<s>"), ("LlamaTokenizerFast", True)),
        ({}, bos_template(None), ("LlamaTokenizerFast", False)),
        ({"add_prefix_space": True}, bos_template("<s>"), ("PreTrainedTokenizerFast", None)),  # 4.45: from slow
        ({}, {"type": "Sequence", "processors": []}, ("PreTrainedTokenizerFast", None)),
        ({}, bos_template("<other>"), ("PreTrainedTokenizerFast", None)),
    ],
)
def test_a_llama_tokenizer_keeps_its_class_only_where_4_45_rebuilds_the_same(extra, post_processor, expected):
    config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", **extra}
    out = portable_tokenizer_config(config, {"model": {"type": "BPE"}, "post_processor": post_processor})
    assert (out["tokenizer_class"], out.get("add_bos_token")) == expected


def test_make_portable_replaces_files_atomically_and_once(tmp_path, monkeypatch):
    config = {"model_type": "llama", "dtype": "float32", "rope_parameters": {"rope_type": "default", "rope_theta": 1}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    assert make_portable(tmp_path) == ["config.json"]
    assert json.loads((tmp_path / "config.json").read_text())["rope_theta"] == 1
    assert make_portable(tmp_path) == []  # nothing left to change
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no temporary file left

    (tmp_path / "config.json").write_text(json.dumps(config))

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        make_portable(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == config  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    with pytest.raises(FileNotFoundError, match="absent"):
        make_portable(tmp_path / "absent")
