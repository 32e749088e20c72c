import pytest

from flat_pipeline.data.text_chunks import chunk_text, completion_pairs, split_passage


def test_split_passage():
    assert split_passage("a b c d", 1) == ("a", "b c d")
    assert split_passage("a b c d", 3) == ("a b c", "d")
    # White space inside each part is kept; around the cut and the text it is dropped.
    assert split_passage("  a\nb  c\n\nd e ", 2) == ("a\nb", "c\n\nd e")


@pytest.mark.parametrize("prompt_words", [0, 4, 5])
def test_split_passage_needs_words_on_both_sides(prompt_words):
    with pytest.raises(ValueError, match="prompt_words"):
        split_passage("a b c d", prompt_words)


def test_chunk_text_keeps_inner_white_space_and_a_short_tail():
    assert chunk_text(" a b\n\nc d e ", 2) == ["a b", "c d", "e"]
    assert chunk_text("a b c d", 4) == ["a b c d"]
    assert chunk_text("", 3) == []


def test_completion_pairs_cut_every_chunk_into_prompt_and_continuation():
    pairs = completion_pairs(["w1 w2 w3 w4 w5 w6 w7", "v1 v2 v3"], chunk_words=3, prompt_words=2)
    assert pairs == [
        {"question": "w1 w2", "answer": "w3"},
        {"question": "w4 w5", "answer": "w6"},
        # "w7" alone has no continuation after a 2-word prompt: dropped
        {"question": "v1 v2", "answer": "v3"},
    ]


def test_completion_pairs_need_room_for_an_answer():
    with pytest.raises(ValueError, match="prompt_words \\(4\\) must be smaller than chunk_words \\(4\\)"):
        completion_pairs(["a b c d e"], chunk_words=4, prompt_words=4)
