"""Prompt formats. One function builds every prompt, so training, generation and evaluation cannot drift apart."""

from __future__ import annotations

PROMPT_FORMATS = ("plain",)


def format_prompt(question: str, prompt_format: str = "plain", instruction: str | None = None) -> str:
    """The text a model sees before its answer; the answer itself follows after a single space."""
    if prompt_format != "plain":
        raise ValueError(f"prompt format: expected one of {PROMPT_FORMATS}, got '{prompt_format}'")
    prefix = f"{instruction}\n" if instruction else ""
    return f"{prefix}Question: {question}\nAnswer:"
