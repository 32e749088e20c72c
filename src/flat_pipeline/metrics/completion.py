"""Metrics on text continuations: the copyright (HP) scores of FLAT's `evaluate.py` and MUSE's VerbMem / KnowMem.

Pure text functions: generation happens elsewhere; these only build prompts and score strings.
Every scorer takes `(generated, references)` and returns one float per example; `flat_pipeline.evaluation.METRICS`
registers the metrics built on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from flat_pipeline.metrics.text import rouge_l_recall
from flat_pipeline.prompts import format_prompt

# FLAT's evaluate.py prefixes every reference with this (spec flat.md §3.4).
QUIRK_REFERENCE_PREFIX = "### Answer: "
KNOWMEM_STOP_MARKERS = ("\n\n", "Question")


def bleu(generated: Sequence[str], references: Sequence[str]) -> list[float]:
    """sacreBLEU of each generation against its reference, 0-100, one `corpus_bleu` call per example as FLAT does.

    Per-example corpus BLEU is not the same as one corpus BLEU over all examples; FLAT averages the per-example scores.
    """
    from sacrebleu import corpus_bleu

    return [corpus_bleu([gen], [[ref]]).score for gen, ref in zip(generated, references, strict=True)]


@lru_cache(maxsize=2)
def _rouge_l_scorer(use_stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)


def rouge_l_f1(generated: Sequence[str], references: Sequence[str], use_stemmer: bool) -> list[float]:
    """rouge-score `rougeL` F-measure of each generation against its reference, 0-1.

    MUSE's own code uses no stemmer, open-unlearning uses the Porter stemmer; the choice is the caller's.
    """
    scorer = _rouge_l_scorer(use_stemmer)
    return [scorer.score(ref, gen)["rougeL"].fmeasure for gen, ref in zip(generated, references, strict=True)]


def _drop_first_word(text: str) -> str:
    parts = text.split(maxsplit=1)
    return parts[1] if len(parts) == 2 else ""


def copyright_scores(
    generated: Sequence[str], references: Sequence[str], reference_quirks: bool = False
) -> dict[str, list[float]]:
    """Per-example BLEU (0-100) and ROUGE-L recall (0-1, stemmer on) of continuations, as FLAT's HP evaluation.

    With `reference_quirks=False` each generation is scored against its reference as given.
    With `reference_quirks=True` two text-level quirks of FLAT's `evaluate.py` are reproduced (spec B13, §3.4):
    - the first whitespace-separated word of each generation is dropped. FLAT drops the first generated *token*
      (`outputs[:, prompt_len+1:]`); a word is the closest thing visible on text, so this is an approximation;
    - each reference is prefixed with `"### Answer: "`, which the generations are not asked to produce.
    The third quirk, `max_length` counting the prompt, belongs to generation: see `quirk_max_new_tokens`.
    """
    if reference_quirks:
        generated = [_drop_first_word(gen) for gen in generated]
        references = [QUIRK_REFERENCE_PREFIX + ref for ref in references]
    return {"bleu": bleu(generated, references), "rouge_l_recall": rouge_l_recall(generated, references)}


def quirk_max_new_tokens(prompt_length: int, max_length: int = 600) -> int:
    """New tokens FLAT's generation allows: its `max_length` 600 counts the prompt, so long prompts get fewer."""
    return max(0, max_length - prompt_length)


def knowmem_prompt(question: str, shots: Sequence[tuple[str, str]]) -> str:
    """MUSE KnowMem in-context prompt: `Question: q\\nAnswer: a` blocks joined by blank lines, then the question."""
    # format_prompt's default format (phi-1_5, the space after `Answer:` given to the answer) is exactly MUSE's
    # "Question: ...\nAnswer:" block, so the two stay in step.
    blocks = [f"{format_prompt(q)} {a}" for q, a in shots]
    return "\n\n".join([*blocks, format_prompt(question)])


def cut_knowmem_answer(generated: str) -> str:
    """The answer part of a KnowMem generation: up to the first blank line or "Question", stripped.

    With in-context examples the model tends to go on with a new "Question: ..." block; that is not its answer.
    """
    end = min((i for i in (generated.find(m) for m in KNOWMEM_STOP_MARKERS) if i >= 0), default=len(generated))
    return generated[:end].strip()


def verbmem_rouge(generated: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> list[float]:
    """MUSE VerbMem: ROUGE-L F1 (0-1) of each continuation against the true continuation `gt`.

    MUSE's code also cuts `gt` to its first 128 tokens; that needs a tokenizer and is left to the caller.
    """
    return rouge_l_f1(generated, references, use_stemmer)


def knowmem_rouge(generated: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> list[float]:
    """MUSE KnowMem: ROUGE-L F1 (0-1) of each answer, cut by `cut_knowmem_answer`, against the true answer."""
    return rouge_l_f1([cut_knowmem_answer(gen) for gen in generated], references, use_stemmer)
