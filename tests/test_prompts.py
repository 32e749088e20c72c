import logging
import re

import pytest

from flat_pipeline.config import ParameterError
from flat_pipeline.prompts import (
    IGNORE_INDEX,
    PromptFormat,
    encode_example,
    encode_prompt,
    format_prompt,
    training_text,
)

OPEN_UNLEARNING = {"boundary": "prompt", "tokenization": "whole"}
QUESTION, ANSWER = "Where was Eymar Lundgaard born?", "Eymar Lundgaard was born in Bergen, Norway."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """Our byte-level BPE: like GPT-2's, it attaches a space to the word after it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_templates_and_boundaries():
    assert format_prompt("Who?") == "Question: Who?\nAnswer:"
    assert format_prompt("Who?", PromptFormat(boundary="prompt")) == "Question: Who?\nAnswer: "
    assert format_prompt("Who?", PromptFormat("Llama-2-chat")) == "[INST] Who? [/INST]"
    assert format_prompt("Who?", instruction="Refuse.") == "Refuse.\nQuestion: Who?\nAnswer:"
    assert format_prompt("Who?", PromptFormat("Llama-2-chat"), instruction="Refuse.") == "[INST] Refuse.\nWho? [/INST]"
    assert format_prompt("Continue: Harry", PromptFormat("hp")) == "### Question: Continue: Harry\n### Answer:"
    assert format_prompt("The minister said", PromptFormat("completion")) == "The minister said"
    # Either boundary gives the same text in the end; only the cut differs.
    for boundary in ("prompt", "answer"):
        assert training_text("Who?", "Nobody.", PromptFormat(boundary=boundary)) == "Question: Who?\nAnswer: Nobody."
    assert training_text("Who?", "Nobody.", PromptFormat("Llama-2-chat")) == "[INST] Who? [/INST]Nobody."


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt": {"format": "alpaca"}}, "parameter model.prompt.format: expected one of phi-1_5, Llama-2-chat"),
        ({"prompt": {"format": "plain"}}, "'plain' is now 'phi-1_5 (with boundary: answer)'"),
        ({"prompt": {"boundary": "middle"}}, "parameter model.prompt.boundary: expected one of prompt, answer"),
        ({"prompt": {"tokenization": "joint"}}, "parameter model.prompt.tokenization: expected one of whole, separate"),
        ({"prompt": {"date_string": "10 Apr 2025"}}, "model.prompt.date_string: only the chat_template format uses it"),
        ({"prompt": {"fromat": "hp"}}, "parameter model.prompt.fromat: unknown key (did you mean 'format'?)"),
        ({"prompt_format": "plain"}, "model.prompt_format: replaced by the block model.prompt"),
        ({"prompt": "phi-1_5"}, "parameter model.prompt: expected a mapping"),
    ],
)
def test_bad_settings_are_named(params, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        PromptFormat.from_params(params)


def test_chat_template_format_uses_the_tokenizers_template(tokenizer):
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("Who?", PromptFormat("chat_template"), tokenizer=tokenizer)
    tokenizer.chat_template = (
        "<bos>{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
        "{% if m['role'] == 'assistant' %}<eos>{% else %}{{ '\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% if date_string %}[{{ date_string }}] {% endif %}{% endif %}"
    )
    try:
        chat = PromptFormat("chat_template", system_prompt="Be brief.", date_string="10 Apr 2025")
        expected = "<bos>system: Be brief.\nuser: Who?\nassistant: [10 Apr 2025] "
        assert format_prompt("Who?", chat, tokenizer=tokenizer) == expected
        for tokenization in ("whole", "separate"):
            encoded = encode_example(
                tokenizer, "Nobody.", "Who?", PromptFormat("chat_template", tokenization=tokenization)
            )
            assert encoded.input_ids.count(tokenizer.bos_token_id) == 1  # the template's own, not added again
            assert encoded.input_ids[-1] == tokenizer.eos_token_id
            assert encoded.input_ids.count(tokenizer.eos_token_id) == 1  # the closed turn's eos is not doubled
    finally:
        tokenizer.chat_template = None


@pytest.mark.parametrize("name", ["phi-1_5", "Llama-2-chat", "hp", "completion"])
@pytest.mark.parametrize("tokenization", ["separate", "whole"])
def test_answer_boundary_keeps_the_prompt_an_exact_token_prefix(tokenizer, name, tokenization):
    prompt_format = PromptFormat(name, boundary="answer", tokenization=tokenization)
    encoded = encode_example(tokenizer, ANSWER, QUESTION, prompt_format)
    prompt = encode_prompt(tokenizer, QUESTION, prompt_format)
    assert encoded.input_ids[: encoded.prompt_length] == prompt
    assert encoded.input_ids[0] == tokenizer.bos_token_id
    assert encoded.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer_ids = encoded.labels[len(prompt) :]
    assert answer_ids == encoded.input_ids[len(prompt) :]
    assert answer_ids[-1] == tokenizer.eos_token_id  # eos is appended and scored
    assert tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == ANSWER
    # Same ids as tokenising the joined text: byte-level BPE starts the answer's first token with its space.
    assert encoded.input_ids[:-1] == tokenizer(training_text(QUESTION, ANSWER, prompt_format))["input_ids"]


def test_whole_tokenization_is_open_unlearnings_recipe(tokenizer, caplog, monkeypatch):
    """open-unlearning tokenises prompt + answer as one string, appends eos, and masks as many positions as the prompt
    has tokens alone; with the space in the prompt and a GPT-2-style BPE that cut is one token off, and it warns."""
    monkeypatch.setattr("flat_pipeline.prompts._warned_misaligned", set())  # once per process: other tests warn too
    prompt_format = PromptFormat(**OPEN_UNLEARNING)
    prompt_text = f"Question: {QUESTION}\nAnswer: "
    whole = tokenizer(prompt_text + ANSWER)["input_ids"] + [tokenizer.eos_token_id]
    prompt_ids = tokenizer(prompt_text)["input_ids"]
    with caplog.at_level(logging.WARNING, logger="flat_pipeline.prompts"):
        encoded = encode_example(tokenizer, ANSWER, QUESTION, prompt_format)
    assert encoded.input_ids == whole
    assert encoded.labels == [IGNORE_INDEX] * len(prompt_ids) + whole[len(prompt_ids) :]
    assert not encoded.aligned
    assert encode_prompt(tokenizer, QUESTION, prompt_format) == prompt_ids  # generation starts after the lone space
    assert prompt_ids[-1] != whole[len(prompt_ids) - 1]  # the lone space is no token of the whole string
    assert "not a token prefix" in caplog.text
    # The separate tokenization of the same boundary keeps the lone space token and never misaligns.
    separate = encode_example(tokenizer, ANSWER, QUESTION, PromptFormat(boundary="prompt"))
    assert separate.input_ids[: separate.prompt_length] == prompt_ids and separate.aligned


def test_raw_text_labels_every_token_but_bos(tokenizer):
    encoded = encode_example(tokenizer, "Eymar Lundgaard was born in Bergen.")
    assert encoded.prompt_length == 1 and encoded.labels[0] == IGNORE_INDEX
    assert encoded.labels[1:] == encoded.input_ids[1:] and encoded.input_ids[-1] == tokenizer.eos_token_id


@pytest.mark.parametrize("tokenization", ["separate", "whole"])
def test_max_length_cuts_the_answer_and_keeps_eos(tokenizer, tokenization):
    answer, prompt_format = "one two three four five six seven eight nine ten", PromptFormat(tokenization=tokenization)
    full = encode_example(tokenizer, answer, "Count?", prompt_format)
    limit = full.prompt_length + 4
    cut = encode_example(tokenizer, answer, "Count?", prompt_format, max_length=limit)
    assert len(cut.input_ids) == limit < len(full.input_ids)
    assert cut.input_ids[-1] == tokenizer.eos_token_id and cut.input_ids[: limit - 1] == full.input_ids[: limit - 1]
    with pytest.raises(ValueError, match="no room"):
        encode_example(tokenizer, answer, "Count?", prompt_format, max_length=full.prompt_length)


def _metaspace_tokenizer():
    """A Llama-2-style tokenizer (Metaspace, byte-fallback BPE): it starts any text tokenised alone with a word
    boundary marker, so an answer tokenised on its own would gain a space that the whole string does not have."""
    from transformers import LlamaTokenizer

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "▁" + "".join(sorted(set(QUESTION + ANSWER + "[INST/]Qustion:Answer"))):
        vocab.setdefault(char, len(vocab))
    merges = [("▁", "E"), ("▁E", "y"), ("]", "E")]
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    return LlamaTokenizer(vocab=vocab, merges=merges, add_bos_token=True)


@pytest.mark.parametrize(
    ("prompt_format", "answer", "prefix"),
    [
        ({"format": "phi-1_5", "boundary": "answer"}, ANSWER, True),  # `Answer:` + `▁Ey`
        ({"format": "phi-1_5", "boundary": "prompt"}, "In Bergen.", True),  # `Answer:▁` + `I` (no `▁I` token)
        ({"format": "phi-1_5", "boundary": "prompt"}, ANSWER, False),  # `Answer:▁` + `Ey`: the whole string has `▁Ey`
        ({"format": "Llama-2-chat"}, ANSWER, False),  # `[/INST]` + `Ey`: the whole string has `]E`
    ],
)
def test_separate_is_whole_where_the_prompt_is_a_token_prefix_with_sentencepiece(prompt_format, answer, prefix):
    """Llama-2's tokenizer marks the start of a text alone with `▁`: the answer's ids must come from the whole
    string wherever the prompt is a token prefix of it, or `separate` would score a space open-unlearning never saw;
    elsewhere `separate` keeps the prompt's own ids as the prefix."""
    tokenizer = _metaspace_tokenizer()
    whole = encode_example(tokenizer, answer, QUESTION, PromptFormat(**prompt_format, tokenization="whole"))
    separate = encode_example(tokenizer, answer, QUESTION, PromptFormat(**prompt_format, tokenization="separate"))
    prompt = encode_prompt(tokenizer, QUESTION, PromptFormat(**prompt_format))
    assert (whole.input_ids[: len(prompt)] == prompt) is prefix
    assert separate.input_ids[: separate.prompt_length] == prompt
    if prefix:
        assert separate == whole
