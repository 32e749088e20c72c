"""What identifies a forget, retain or holdout item across files: its text as it reads, not its bytes."""

from __future__ import annotations

import unicodedata


def item_key(text: str) -> str:
    """Unicode NFC, runs of whitespace as one space, no leading or trailing space, case folded: a forget question
    written with a trailing space, a non-breaking space, decomposed accents or another case is the same item."""
    return " ".join(unicodedata.normalize("NFC", text).split()).casefold()
