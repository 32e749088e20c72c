"""Prompt formats and the one tokenisation function that training, unlearning and evaluation all use.

Prompt and answer are tokenised separately and their ids concatenated, so the prompt is always an exact token prefix
of prompt + answer: with byte-level BPE, tokenising the joined text can merge the space before the answer into the
prompt's last token and shift the label boundary (shared/spec/benchmarks-and-metrics.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PROMPT_FORMATS = ("plain", "llama2_chat", "chat_template", "hp", "completion")
IGNORE_INDEX = -100


def format_prompt(
    question: str, prompt_format: str = "plain", instruction: str | None = None, tokenizer: Any = None
) -> str:
    """The text a model sees before its answer.

    - `plain`: `Question: {q}\\nAnswer:` (TOFU with Phi-1.5 / Llama-2 base, MUSE);
    - `llama2_chat`: `[INST] {q} [/INST]` (TOFU with Llama-2-chat);
    - `chat_template`: the tokenizer's own chat template with a generation prompt;
    - `hp`: `### Question: {q}\\n### Answer:` (FLAT's Harry Potter task, flat.md §3.1);
    - `completion`: the question is the start of a text and the answer its continuation (MUSE's forget text).
    """
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"parameter model.prompt_format: expected one of {PROMPT_FORMATS}, got '{prompt_format}'")
    if prompt_format == "chat_template":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "parameter model.prompt_format: 'chat_template' needs a tokenizer that has a chat template"
            )
        content = f"{instruction}\n{question}" if instruction else question
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
        )
    prefix = f"{instruction}\n" if instruction else ""
    if prompt_format == "completion":
        return prefix + question
    if prompt_format == "hp":
        return f"{prefix}### Question: {question}\n### Answer:"
    if prompt_format == "llama2_chat":
        return f"[INST] {prefix}{question} [/INST]"
    return f"{prefix}Question: {question}\nAnswer:"


def answer_text(answer: str, prompt_format: str) -> str:
    """The answer as it follows its prompt: after one space, except where a chat template ends the turn header."""
    return answer if prompt_format == "chat_template" else f" {answer}"


def _prompt_ids(tokenizer: Any, question: str, prompt_format: str) -> list[int]:
    text = format_prompt(question, prompt_format, tokenizer=tokenizer)
    # A chat template writes its own special tokens (bos included); plain prompts get the tokenizer's bos.
    return tokenizer(text, add_special_tokens=prompt_format != "chat_template")["input_ids"]


def _bos(tokenizer: Any) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; `labels` are -100 on the prompt, so only answer tokens (and eos) carry loss."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def encode_example(
    tokenizer: Any,
    answer: str,
    question: str | None = None,
    prompt_format: str = "plain",
    max_length: int | None = None,
) -> Encoded:
    """Token ids and labels of a QA pair, or of a raw text when `question` is None (every text token is a label).

    eos is appended to the answer and is a scored label. With `max_length`, the answer is cut to fit, eos kept.
    """
    if question is None:
        prompt = _bos(tokenizer)
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
    else:
        prompt = _prompt_ids(tokenizer, question, prompt_format)
        target = tokenizer(answer_text(answer, prompt_format), add_special_tokens=False)["input_ids"]
    target = [*target, tokenizer.eos_token_id]
    if max_length is not None and len(prompt) + len(target) > max_length:
        keep = max_length - len(prompt) - 1
        if keep < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for the answer after a {len(prompt)}-token prompt"
            )
        target = [*target[:keep], tokenizer.eos_token_id]
    return Encoded(
        input_ids=prompt + target,
        labels=[IGNORE_INDEX] * len(prompt) + target,
        prompt_length=len(prompt),
    )


def encode_prompt(tokenizer: Any, question: str, prompt_format: str = "plain") -> list[int]:
    """Token ids of the prompt alone, exactly the prefix `encode_example` puts before the answer."""
    return _prompt_ids(tokenizer, question, prompt_format)
