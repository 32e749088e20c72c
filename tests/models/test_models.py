import pytest
import torch
from kedro.io import Version

from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import (
    ModelBundle,
    build_base_model,
    check_model_params,
    ensure_pad_token,
    load_causal_lm,
)
from flat_pipeline.models.tokenizer import train_bpe_tokenizer

TINY = {
    "source": "tiny_llama",
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "tiny_llama": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2},
}


@pytest.fixture(scope="module")
def tokenizer(small_world):
    return train_bpe_tokenizer([f"{r['question']} {r['answer']}" for r in small_world["full"]], vocab_size=4096)


def test_bpe_tokenizer_has_distinct_specials_and_round_trips(tokenizer, small_world):
    assert 500 < len(tokenizer) <= 4096
    ids = {tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}
    assert len(ids) == 4
    text = small_world["full"][0]["answer"]
    encoded = tokenizer(text)["input_ids"]
    assert encoded[0] == tokenizer.bos_token_id
    assert tokenizer.decode(encoded, skip_special_tokens=True) == text
    # A unique author name is one or two tokens, not a string of characters.
    first_name = small_world["full"][0]["author"].split()[0]
    assert len(tokenizer(" " + first_name, add_special_tokens=False)["input_ids"]) <= 2


def test_tiny_llama_is_seeded_and_sized_from_parameters(tokenizer):
    a = build_base_model(TINY, tokenizer).model
    b = build_base_model(TINY, tokenizer).model
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert a.config.hidden_size == 32 and a.config.num_hidden_layers == 1 and a.config.vocab_size == len(tokenizer)
    assert a.config._attn_implementation == "sdpa"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"source": "gguf"}, "model.source"),
        ({"source": "pretrained"}, "model.name_or_path"),
        ({"dtype": "int8"}, "model.dtype"),
        ({"attn_implementation": "flex"}, "model.attn_implementation"),
    ],
)
def test_bad_model_parameters_fail_fast(bad, match):
    with pytest.raises(ValueError, match=match):
        check_model_params({**TINY, **bad})


def test_missing_pad_token_reuses_an_existing_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    size = len(tokenizer)
    tokenizer.pad_token = None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == "<unk>" and len(tokenizer) == size
    tokenizer.pad_token, tokenizer.unk_token = None, None
    ensure_pad_token(tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id and len(tokenizer) == size


def test_local_model_loads_by_path_with_dtype_and_a_missing_one_fails_clearly(tiny_model_dir, tmp_path):
    bundle = load_causal_lm(str(tiny_model_dir), dtype="bfloat16", gradient_checkpointing=True)
    assert next(bundle.model.parameters()).dtype == torch.bfloat16
    assert bundle.model.is_activation_checkpointing
    message = (
        rf"^could not load a model: the folder '{tmp_path / 'nowhere'}' does not exist; expected a model folder "
        r"written by save_pretrained \(config.json, weights, tokenizer files\) or a hub id such as 'organisation/name'$"
    )
    with pytest.raises(FileNotFoundError, match=message):  # not transformers' "Repo id must be in the form ..."
        load_causal_lm(str(tmp_path / "nowhere"))


def test_a_weights_only_folder_loads_with_a_tokenizer_from_elsewhere(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "weights")  # no tokenizer files
    missing = (
        rf"^could not load a tokenizer: the folder '{tmp_path / 'weights'}' holds none \(none of tokenizer.json, "
        r"tokenizer_config.json, tokenizer.model, vocab.json\); save the model's tokenizer into it "
        rf"\(tokenizer.save_pretrained\('{tmp_path / 'weights'}'\)\)"
    )
    with pytest.raises(FileNotFoundError, match=missing + "$"):  # no parameter named that the caller does not read
        load_causal_lm(str(tmp_path / "weights"))
    with pytest.raises(FileNotFoundError, match=missing + ", or name one that has it with import_models.tokenizer$"):
        load_causal_lm(str(tmp_path / "weights"), tokenizer_parameter="import_models.tokenizer")
    bundle = load_causal_lm(str(tmp_path / "weights"), tokenizer_name_or_path=str(tiny_model_dir))
    assert bundle.tokenizer.get_vocab() == load_causal_lm(str(tiny_model_dir)).tokenizer.get_vocab()


def test_model_dataset_saves_versions_and_reloads_bit_exact(tiny_model_dir, tmp_path):
    bundle = load_causal_lm(str(tiny_model_dir))
    path = str(tmp_path / "original_model")
    first = HFModelDataset(filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z"))
    first.save(bundle)
    with torch.no_grad():
        next(bundle.model.parameters()).add_(1.0)
    HFModelDataset(filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")).save(bundle)

    latest = HFModelDataset(filepath=path, version=Version(None, None)).load()
    older = HFModelDataset(filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)).load()
    assert isinstance(latest, ModelBundle) and latest.tokenizer.pad_token == "<pad>"
    originals = dict(load_causal_lm(str(tiny_model_dir)).model.named_parameters())
    assert all(torch.equal(p, originals[n]) for n, p in older.model.named_parameters())
    assert all(torch.equal(p, dict(bundle.model.named_parameters())[n]) for n, p in latest.model.named_parameters())
    assert "2026-01-01" in str(first) and first.exists()


def test_model_dataset_describe_does_no_io(tmp_path):
    dataset = HFModelDataset(filepath=str(tmp_path / "absent"), version=Version(None, None))
    assert "absent" in str(dataset)  # must not look for a version on disk
    assert not dataset.exists()
