"""Raw text cut into pieces: passages split into a prompt and its continuation, documents cut into chunks.

MUSE's forget set is raw text (news articles, book chapters), but FLAT learns from (prompt, answer) pairs: it pushes
the forget answer down against a template answer to the same prompt. The spec found no FLAT recipe for MUSE
(flat.md §2, §4.2), so we decide: each document is cut into chunks of `chunk_words` words, and each chunk becomes
one pair, its first `prompt_words` words the prompt and the rest the answer to forget. That is the shape of MUSE's
own VerbMem probe (a text's start, then its continuation), so the unlearning trains on the behaviour VerbMem
measures. Retain documents become chunks of raw text (no prompt).
"""

from __future__ import annotations

import re
from collections.abc import Iterable


def _words(text: str) -> list[re.Match[str]]:
    return list(re.finditer(r"\S+", text))


def split_passage(text: str, prompt_words: int) -> tuple[str, str]:
    """The first `prompt_words` whitespace-separated words of `text` and the rest (the continuation reference).

    White space inside each part is kept as written (newlines matter for news text); the white space between the
    two parts and around the whole text is dropped.
    """
    if prompt_words < 1:
        raise ValueError(f"prompt_words must be at least 1, got {prompt_words}")
    words = _words(text)
    if len(words) <= prompt_words:
        raise ValueError(
            f"prompt_words={prompt_words} leaves nothing to continue: the text has only {len(words)} words"
        )
    cut = words[prompt_words - 1].end()
    return text[words[0].start() : cut], text[cut:].strip()


def chunk_text(text: str, chunk_words: int) -> list[str]:
    """`text` cut into consecutive pieces of `chunk_words` words (the last one shorter), white space inside kept."""
    if chunk_words < 1:
        raise ValueError(f"chunk_words must be at least 1, got {chunk_words}")
    words = _words(text)
    return [
        text[words[start].start() : words[min(start + chunk_words, len(words)) - 1].end()]
        for start in range(0, len(words), chunk_words)
    ]


def completion_pairs(texts: Iterable[str], chunk_words: int, prompt_words: int) -> list[dict[str, str]]:
    """`{"question": prompt, "answer": continuation}` for every chunk of every text.

    A chunk with no word left after its prompt (a document's short tail) is dropped: it has nothing to forget.
    """
    if prompt_words >= chunk_words:
        raise ValueError(f"prompt_words ({prompt_words}) must be smaller than chunk_words ({chunk_words})")
    pairs = []
    for text in texts:
        for chunk in chunk_text(text, chunk_words):
            if len(_words(chunk)) > prompt_words:
                prompt, continuation = split_passage(chunk, prompt_words)
                pairs.append({"question": prompt, "answer": continuation})
    return pairs
