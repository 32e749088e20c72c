import math

import pytest

from flat_pipeline.metrics.completion import (
    bleu,
    copyright_scores,
    cut_knowmem_answer,
    knowmem_prompt,
    knowmem_rouge,
    quirk_max_new_tokens,
    rouge_l_f1,
    verbmem_rouge,
)

MAT = "the cat sat on the mat"


def test_bleu_golden():
    # Identical: every n-gram precision 1, brevity penalty 1 -> 100.
    # Disjoint: no unigram matches -> 0.
    # Hypothesis = reference minus its last word: precisions 6/6, 5/5, 4/4, 3/3, BP = exp(1 - 7/6).
    # One extra leading word: precisions 6/7, 5/6, 4/5, 3/4, BP = 1 -> (3/7) ** (1/4).
    scores = bleu([MAT, "a b c d", MAT, "Well " + MAT], [MAT, "w x y z", MAT + " today", MAT])
    assert scores == pytest.approx([100.0, 0.0, 100 * math.exp(-1 / 6), 100 * (3 / 7) ** 0.25])


def test_rouge_l_f1_golden_and_stemmer():
    # LCS("the cat sat", MAT) = 3: P = 3/3, R = 3/6, F = 2 * 1 * 0.5 / 1.5 = 2/3.
    assert rouge_l_f1(["the cat sat"], [MAT], use_stemmer=False) == pytest.approx([2 / 3])
    # Porter stems "running" to "run": a match only with the stemmer.
    assert rouge_l_f1(["running"], ["run"], use_stemmer=True) == [1.0]
    assert rouge_l_f1(["running"], ["run"], use_stemmer=False) == [0.0]


def test_copyright_scores_clean():
    # ROUGE-L recall: the whole reference is a subsequence of the generation -> 1.
    scores = copyright_scores(["Well " + MAT], [MAT])
    assert scores["bleu"] == pytest.approx([100 * (3 / 7) ** 0.25])
    assert scores["rouge_l_recall"] == [1.0]


def test_copyright_scores_reference_quirks():
    # "Well" is dropped, the reference becomes "### Answer: " + MAT.
    # BLEU (13a tokens "# # # Answer : the cat sat on the mat", 11 of them): all 6 hypothesis words match in order,
    # precisions 1, BP = exp(1 - 11/6).
    # ROUGE-L recall (rouge-score drops punctuation: "answer the cat sat on the mat"): LCS 6 of 7.
    scores = copyright_scores(["Well " + MAT], [MAT], reference_quirks=True)
    assert scores["bleu"] == pytest.approx([100 * math.exp(-5 / 6)])
    assert scores["rouge_l_recall"] == pytest.approx([6 / 7])
    # A one-word generation is left with nothing.
    assert copyright_scores(["Well"], [MAT], reference_quirks=True) == {"bleu": [0.0], "rouge_l_recall": [0.0]}


def test_quirk_max_new_tokens():
    assert quirk_max_new_tokens(100) == 500
    assert quirk_max_new_tokens(20, max_length=50) == 30
    assert quirk_max_new_tokens(700) == 0


def test_knowmem_prompt():
    shots = [("Who?", "Ann."), ("Where?", "Rome.")]
    expected = "Question: Who?\nAnswer: Ann.\n\nQuestion: Where?\nAnswer: Rome.\n\nQuestion: When?\nAnswer:"
    assert knowmem_prompt("When?", shots) == expected
    assert knowmem_prompt("When?", []) == "Question: When?\nAnswer:"


def test_cut_knowmem_answer():
    assert cut_knowmem_answer(" Paris.\n\nQuestion: Where?") == "Paris."
    assert cut_knowmem_answer(" Paris.\nQuestion: Where?") == "Paris."
    assert cut_knowmem_answer(" Paris Question\n\nmore") == "Paris"
    assert cut_knowmem_answer(" Paris.\n") == "Paris."


def test_muse_rouge():
    # Uncut: "paris question where" vs "paris": LCS 1, P = 1/3, R = 1 -> F = 1/2; cut: "paris" -> 1.
    generated, references = ["Paris\n\nQuestion: where"], ["Paris"]
    assert verbmem_rouge(generated, references) == pytest.approx([0.5])
    assert knowmem_rouge(generated, references) == [1.0]
    assert knowmem_rouge(["running"], ["run"], use_stemmer=False) == [0.0]
