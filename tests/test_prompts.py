import pytest

from flat_pipeline.prompts import IGNORE_INDEX, encode_example, encode_prompt, format_prompt


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_prompt_formats():
    assert format_prompt("Who?") == "Question: Who?\nAnswer:"
    assert format_prompt("Who?", "llama2_chat") == "[INST] Who? [/INST]"
    assert format_prompt("Who?", instruction="Refuse.") == "Refuse.\nQuestion: Who?\nAnswer:"
    assert format_prompt("Continue: Harry", "hp") == "### Question: Continue: Harry\n### Answer:"
    assert format_prompt("The minister said", "completion") == "The minister said"
    with pytest.raises(ValueError, match="model.prompt_format"):
        format_prompt("Who?", "alpaca")


def test_chat_template_format_uses_the_tokenizers_template(tokenizer):
    with pytest.raises(ValueError, match="chat template"):
        format_prompt("Who?", "chat_template", tokenizer=tokenizer)
    tokenizer.chat_template = (
        "{% for m in messages %}<bos>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    try:
        assert format_prompt("Who?", "chat_template", tokenizer=tokenizer) == "<bos>user: Who?\nassistant:"
        encoded = encode_example(tokenizer, "Nobody.", "Who?", "chat_template")
        assert encoded.input_ids[0] == tokenizer.bos_token_id and encoded.input_ids.count(tokenizer.bos_token_id) == 1
    finally:
        tokenizer.chat_template = None


@pytest.mark.parametrize("prompt_format", ["plain", "llama2_chat", "hp", "completion"])
def test_prompt_is_an_exact_token_prefix_and_only_the_answer_is_labelled(tokenizer, prompt_format):
    question, answer = "Where was Eymar Lundgaard born?", "Eymar Lundgaard was born in Bergen, Norway."
    encoded = encode_example(tokenizer, answer, question, prompt_format)
    prompt = encode_prompt(tokenizer, question, prompt_format)
    assert encoded.input_ids[: encoded.prompt_length] == prompt
    assert encoded.input_ids[0] == tokenizer.bos_token_id
    assert encoded.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    answer_ids = encoded.labels[len(prompt) :]
    assert answer_ids == encoded.input_ids[len(prompt) :]
    assert answer_ids[-1] == tokenizer.eos_token_id  # eos is appended and scored
    assert tokenizer.decode(answer_ids, skip_special_tokens=True).strip() == answer
    # Same ids as tokenising the joined text: the space before the answer starts the answer's first token.
    joined = tokenizer(format_prompt(question, prompt_format) + " " + answer)["input_ids"]
    assert encoded.input_ids[:-1] == joined


def test_raw_text_labels_every_token_but_bos(tokenizer):
    encoded = encode_example(tokenizer, "Eymar Lundgaard was born in Bergen.")
    assert encoded.prompt_length == 1 and encoded.labels[0] == IGNORE_INDEX
    assert encoded.labels[1:] == encoded.input_ids[1:] and encoded.input_ids[-1] == tokenizer.eos_token_id


def test_max_length_cuts_the_answer_and_keeps_eos(tokenizer):
    answer = "one two three four five six seven eight nine ten"
    full = encode_example(tokenizer, answer, "Count?")
    limit = full.prompt_length + 4
    cut = encode_example(tokenizer, answer, "Count?", max_length=limit)
    assert len(cut.input_ids) == limit < len(full.input_ids)
    assert cut.input_ids[-1] == tokenizer.eos_token_id and cut.input_ids[: limit - 1] == full.input_ids[: limit - 1]
    with pytest.raises(ValueError, match="no room"):
        encode_example(tokenizer, answer, "Count?", max_length=full.prompt_length)
