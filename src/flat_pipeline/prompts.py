"""Prompt formats and the one encoding function that training, unlearning and evaluation all use.

A format is a template plus two settings that decide the exact token ids, and with them every number (spec
benchmarks-and-metrics.md §8):
- `boundary`: which side owns the separator between the answer tag and the answer (the space in `Answer: {a}`).
  `answer` gives `...Answer:` + ` {a}`, the natural split for GPT-2-style byte-level BPE, which attaches a space to
  the word after it; open-unlearning puts it in the prompt (`Question: {q}\\nAnswer: ` + `{a}`).
- `tokenization`: `whole` tokenises prompt + answer as one string and labels everything after the prompt's own token
  count, as open-unlearning does. `separate` gives the same ids wherever the prompt's own tokens are a prefix of the
  whole string's, and where the boundary falls inside a token (a GPT-2-style BPE merging `Answer: ` with the first
  word) the parts' own ids instead, so that the prompt is always an exact token prefix and the labels never shift.

Templates are registered by name in `TEMPLATES`; `chat_template` uses the tokenizer's own chat template.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

from flat_pipeline.config import ParameterError, check_choice, config_from_params

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Template:
    """The text around a question and its answer: `question_start + q + question_end + answer_tag + separator + a`."""

    question_start: str
    question_end: str
    answer_tag: str
    separator: str  # what `boundary` gives to the prompt or to the answer
    user_turn: bool = False  # question_start opens a chat turn: an instruction goes inside it, not before it


# Named after the open-unlearning template each reproduces (configs/model/<name>.yaml there), or the task.
TEMPLATES: dict[str, Template] = {
    "phi-1_5": Template("Question: ", "\n", "Answer:", " "),  # open-unlearning's phi-1_5; also Llama-2 base, MUSE
    "Llama-2-chat": Template(
        "[INST] ", " [/INST]", "", "", user_turn=True
    ),  # open-unlearning's Llama-2-7b-chat-hf (TOFU's too)
    "hp": Template("### Question: ", "\n", "### Answer:", " "),  # FLAT's Harry Potter task (flat.md §3.1)
    "completion": Template("", "", "", " "),  # the question is the start of a text, the answer its continuation
}
CHAT_TEMPLATE = "chat_template"  # the tokenizer's chat template (Llama-3 Instruct and other instruct models)
PROMPT_FORMATS = (*TEMPLATES, CHAT_TEMPLATE)
BOUNDARIES = ("prompt", "answer")
TOKENIZATIONS = ("whole", "separate")
# Names this project used before the formats were named after their templates.
RENAMED = {
    "plain": "phi-1_5 (with boundary: answer)",
    "llama2_chat": "Llama-2-chat, which is open-unlearning's: no space before the answer, where llama2_chat had one "
    "(models finetuned with llama2_chat read other ids)",
}


@dataclass(frozen=True)
class PromptFormat:
    """How a QA pair becomes token ids (`model.prompt` in parameters.yml).

    The defaults suit every tokenizer (the prompt is always a token prefix); open-unlearning's own encoding is
    `boundary: prompt, tokenization: whole`, which conf/tofu uses and which its released models were trained with.
    """

    format: str = "phi-1_5"  # a TEMPLATES name, or chat_template
    boundary: str = "answer"  # answer | prompt: which side owns the separator space
    tokenization: str = "separate"  # separate | whole
    system_prompt: str | None = (
        None  # chat_template: a system turn first (open-unlearning: "You are a helpful assistant.")
    )
    date_string: str | None = None  # chat_template: Llama-3's "Today Date" (open-unlearning: "10 Apr 2025")
    block: InitVar[str] = "model.prompt"

    def __post_init__(self, block: str) -> None:
        if self.format in RENAMED:
            raise ParameterError(f"parameter {block}.format: '{self.format}' is now '{RENAMED[self.format]}'")
        check_choice(f"{block}.format", self.format, PROMPT_FORMATS)
        check_choice(f"{block}.boundary", self.boundary, BOUNDARIES)
        check_choice(f"{block}.tokenization", self.tokenization, TOKENIZATIONS)
        chat_only = {"system_prompt": self.system_prompt, "date_string": self.date_string}
        for name, value in chat_only.items():
            if value is not None and self.format != CHAT_TEMPLATE:
                raise ParameterError(f"parameter {block}.{name}: only the chat_template format uses it, got {value!r}")

    @classmethod
    def from_params(cls, model_params: Mapping[str, Any]) -> PromptFormat:
        """The format of a `model` parameter block (its `prompt` sub-block)."""
        if "prompt_format" in model_params:
            raise ParameterError(
                "parameter model.prompt_format: replaced by the block model.prompt "
                "(format, boundary, tokenization); see conf/base/parameters.yml"
            )
        block = model_params.get("prompt") or {}
        if not isinstance(block, Mapping):
            raise ParameterError(f"parameter model.prompt: expected a mapping (format, boundary, ...), got {block!r}")
        return config_from_params(cls, block, "model.prompt")

    def to_params(self) -> dict[str, Any]:
        """The `model.prompt` block this format is read from (for launched processes and reports)."""
        names = ("format", "boundary", "tokenization", "system_prompt", "date_string")
        return {name: getattr(self, name) for name in names}


def _chat_messages(question: str, answer: str | None, prompt: PromptFormat, instruction: str | None) -> list[dict]:
    messages = [{"role": "system", "content": prompt.system_prompt}] if prompt.system_prompt else []
    messages.append({"role": "user", "content": f"{instruction}\n{question}" if instruction else question})
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages


_warned_undated: set[int] = set()


def _apply_chat_template(tokenizer: Any, messages: list[dict], prompt: PromptFormat, generation: bool) -> str:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ParameterError(
            "parameter model.prompt.format: 'chat_template' needs a tokenizer that has a chat template"
        )
    # Llama-3.x templates write today's date into every prompt unless given one
    dated = prompt.date_string is None and "strftime_now" in str(tokenizer.chat_template)
    if dated and id(tokenizer) not in _warned_undated:
        _warned_undated.add(id(tokenizer))
        logger.warning(
            "the chat template writes today's date into every prompt; set model.prompt.date_string "
            "(open-unlearning: '10 Apr 2025') so that prompts stay the same between training and evaluation"
        )
    extra = {"date_string": prompt.date_string} if prompt.date_string is not None else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation, **extra)


def format_prompt(
    question: str, prompt: PromptFormat | None = None, instruction: str | None = None, tokenizer: Any = None
) -> str:
    """The text a model sees before its answer (with the separator when the boundary gives it to the prompt)."""
    prompt = prompt or PromptFormat()
    if prompt.format == CHAT_TEMPLATE:
        return _apply_chat_template(tokenizer, _chat_messages(question, None, prompt, instruction), prompt, True)
    template = TEMPLATES[prompt.format]
    prefix = f"{instruction}\n" if instruction else ""
    inside, before = (prefix, "") if template.user_turn else ("", prefix)
    text = f"{before}{template.question_start}{inside}{question}{template.question_end}{template.answer_tag}"
    return text + (template.separator if prompt.boundary == "prompt" else "")


def answer_text(answer: str, prompt: PromptFormat | None = None) -> str:
    """The answer as it follows its prompt (with the separator when the boundary gives it to the answer)."""
    prompt = prompt or PromptFormat()
    if prompt.format == CHAT_TEMPLATE or prompt.boundary == "prompt":
        return answer
    return TEMPLATES[prompt.format].separator + answer


def training_text(question: str, answer: str, prompt: PromptFormat, tokenizer: Any = None) -> str:
    """Prompt and answer as one text, as the model reads them (e.g. to train a tokenizer on)."""
    if prompt.format == CHAT_TEMPLATE:
        return _apply_chat_template(tokenizer, _chat_messages(question, answer, prompt, None), prompt, False)
    return format_prompt(question, prompt) + answer_text(answer, prompt)


def _tokens(tokenizer: Any, text: str, prompt: PromptFormat) -> list[int]:
    # A chat template writes its own special tokens (bos included); other prompts get the tokenizer's bos.
    return tokenizer(text, add_special_tokens=prompt.format != CHAT_TEMPLATE)["input_ids"]


def _bos(tokenizer: Any) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; `labels` are -100 on the prompt, so only answer tokens (and eos) carry loss."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int
    aligned: bool = True  # False: `whole` tokenization, and the prompt alone is not a token prefix of the whole


_warned_misaligned: set[str] = set()


def _warn_misaligned(prompt: PromptFormat, question: str) -> None:
    # open-unlearning only warns here too; its numbers for such items then mask part of the answer or score a prompt
    # token (our extraction strength and exact memorisation leave such items out). Once per format and run is enough
    # to tell the user to switch to `separate` or move the boundary.
    key = repr(prompt)
    if key not in _warned_misaligned:
        _warned_misaligned.add(key)
        logger.warning(
            "prompt format %s: the prompt tokenised alone is not a token prefix of prompt + answer (e.g. for %r); the "
            "label boundary is one token off, as in open-unlearning. model.prompt.tokenization: separate or "
            "boundary: answer avoids it",
            prompt.to_params(),
            question[:60],
        )


class PromptTooLong(ValueError):
    """A prompt that leaves no room for an answer within `max_length` tokens."""

    def __init__(self, prompt_length: int, max_length: int, message: str | None = None) -> None:
        self.prompt_length, self.max_length = prompt_length, max_length
        super().__init__(
            message or f"max_length={max_length} leaves no room for the answer after a {prompt_length}-token prompt"
        )

    def naming(self, where: str, question: str | None, parameter: str) -> PromptTooLong:
        """The same problem, naming the item (`where`: split and row) and the parameter to raise."""
        return PromptTooLong(
            self.prompt_length,
            self.max_length,
            f"{where}: the prompt of {str(question)[:80]!r} is {self.prompt_length} tokens, which leaves no room for "
            f"an answer within {parameter}={self.max_length}; raise {parameter} to at least {self.prompt_length + 2} "
            f"(the model's max_position_embeddings is the ceiling), or shorten the question",
        )


def encode_example(
    tokenizer: Any,
    answer: str,
    question: str | None = None,
    prompt: PromptFormat | None = None,
    max_length: int | None = None,
) -> Encoded:
    """Token ids and labels of a QA pair, or of a raw text when `question` is None (every text token is a label).

    eos is appended to the answer (unless the encoding already ends with it, as a closed chat turn does) and is a
    scored label. With `max_length`, the answer is cut to fit, eos kept (open-unlearning cuts the string to
    `max_length` tokens and then appends eos, one token more; this matters to training only).
    """
    prompt = prompt or PromptFormat()
    eos = tokenizer.eos_token_id
    aligned = True
    if question is None:
        prompt_ids = _bos(tokenizer)
        ids = [*prompt_ids, *tokenizer(answer, add_special_tokens=False)["input_ids"], eos]
    else:
        prompt_ids = _tokens(tokenizer, format_prompt(question, prompt, tokenizer=tokenizer), prompt)
        ids = _tokens(tokenizer, training_text(question, answer, prompt, tokenizer), prompt)
        ids = ids if ids and ids[-1] == eos else [*ids, eos]
        if ids[: len(prompt_ids)] != prompt_ids:  # the boundary falls inside a token of the whole string
            if prompt.tokenization == "whole":
                aligned = False
                _warn_misaligned(prompt, question)
            else:  # the parts' own ids (a SentencePiece answer may then start with its word-boundary marker)
                answer_ids = tokenizer(answer_text(answer, prompt), add_special_tokens=False)["input_ids"]
                ids = [*prompt_ids, *answer_ids, eos]
    prompt_length = len(prompt_ids)
    target = ids[prompt_length:]
    if max_length is not None and len(ids) > max_length:
        keep = max_length - prompt_length - 1
        if keep < 1:
            raise PromptTooLong(prompt_length, max_length)
        target = [*target[:keep], eos]
    return Encoded(
        input_ids=ids[:prompt_length] + target,
        labels=[IGNORE_INDEX] * prompt_length + target,
        prompt_length=prompt_length,
        aligned=aligned,
    )


def encode_prompt(tokenizer: Any, question: str, prompt: PromptFormat | None = None) -> list[int]:
    """Token ids of the prompt alone, which generation continues: with `separate` tokenization exactly the prefix
    `encode_example` puts before the answer; with `whole`, the prompt tokenised alone, as open-unlearning generates."""
    prompt = prompt or PromptFormat()
    return _tokens(tokenizer, format_prompt(question, prompt, tokenizer=tokenizer), prompt)
