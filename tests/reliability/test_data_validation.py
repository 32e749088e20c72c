"""Data that would have been accepted silently or failed far from its cause (issue 13): each is refused at data_prep
(or at build_training_sets) with one message naming the file, the line or split, the field and what was expected."""

import json
import logging
import re

import pytest
from datasets import Dataset

from flat_pipeline.data.sources import DataValidationError, load_source
from flat_pipeline.data.training_sets import build_training_sets
from flat_pipeline.pipelines.data_prep.nodes import load_benchmark, select_unlearning_sets

QA = {"question": "Who wrote the book?", "answer": "Jane Doe wrote it."}
RETAIN = {"question": "Where was she born?", "answer": "In Lyon."}


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def write_lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def tofu_params(path, **overrides):
    return {"source": "tofu", "path": str(path), "forget_split": "forget10", **overrides}


def hp_folder(folder, forget_rows=None):
    """FLAT's three HP files, tiny."""
    write_lines(folder / "hp_qa.jsonl", forget_rows or [{"prompt": "Continue: The boy", "response": "who lived."}])
    write_lines(folder / "hp.jsonl", [{"text": "Mr and Mrs Dursley, of number four, Privet Drive."}])
    write_lines(folder / "hp_test_qa_200.jsonl", [{"prompt": "Expand on this snippet: A", "response": "B"}])
    return folder


# ---------------------------------------------------------------------------- 1. files that are not JSON records


@pytest.mark.parametrize(("line", "kind"), [("42", "int"), ('["q", "a"]', "list"), ('"text"', "str"), ("null", "null")])
def test_a_json_line_that_is_not_an_object_names_file_line_and_type(tmp_path, line, kind):
    path = tmp_path / "forget10.jsonl"
    path.write_text(json.dumps(QA) + "\n" + line + "\n")
    with pytest.raises(
        DataValidationError, match=exactly(f"{path}, line 2: expected a JSON object per line, got {kind}")
    ):
        load_source("tofu", str(tmp_path))


def test_a_json_list_element_that_is_not_an_object_names_its_line(tmp_path):
    path = tmp_path / "forget10.json"
    path.write_text('[\n  {"question": "q", "answer": "a"},\n  ["q", "a"]\n]\n')
    with pytest.raises(
        DataValidationError,
        match=exactly(f"{path}, line 3: element 1 of the JSON list: expected a JSON object, got list"),
    ):
        load_source("tofu", str(tmp_path))


def test_non_utf8_bytes_name_the_line_and_the_byte(tmp_path):
    path = tmp_path / "retain90.jsonl"
    path.write_bytes(json.dumps(QA).encode() + b'\n{"question": "Caf\xe9?", "answer": "a"}\n')
    with pytest.raises(
        DataValidationError,
        match=exactly(f"{path}, line 2: expected UTF-8 text, got the byte 0xe9 (byte 18 of the line)"),
    ):
        load_source("tofu", str(tmp_path))


def test_a_utf8_byte_order_mark_is_no_content(tmp_path):
    (tmp_path / "forget10.jsonl").write_bytes(b"\xef\xbb\xbf" + json.dumps(QA).encode() + b"\n")
    assert load_source("tofu", str(tmp_path)) == {"forget10": [QA]}


# ---------------------------------------------------------------------------- 2. duplicates, empties, leaks


def test_a_forget_item_twice_is_refused_with_the_count_and_an_example(tmp_path):
    other = {"question": "What is her genre?", "answer": "Crime."}
    write_lines(tmp_path / "forget10.jsonl", [QA, other, QA, other, {"question": "New?", "answer": "Yes."}])
    write_lines(tmp_path / "retain90.jsonl", [RETAIN, RETAIN])  # duplicates outside the forget split are allowed
    with pytest.raises(
        DataValidationError,
        match=exactly(
            f"{tmp_path / 'forget10.jsonl'}: split 'forget10', field 'question': expected each forget item once, got 2 "
            "value(s) repeated, e.g. 'Who wrote the book?' in rows 0 and 2"
        ),
    ):
        load_benchmark(tofu_params(tmp_path))


def test_a_repeated_hp_forget_prompt_is_refused(tmp_path):
    row = {"prompt": "Continue: The boy", "response": "who lived."}
    hp_folder(tmp_path, [row, {**row, "response": "who lived again."}])
    with pytest.raises(DataValidationError, match=r"hp_qa.jsonl: split 'forget', field 'prompt': expected each"):
        load_benchmark({"source": "hp", "path": str(tmp_path), "forget_split": "forget"})


@pytest.mark.parametrize(
    ("source", "file", "row", "field"),
    [
        ("tofu", "retain90.jsonl", {"question": "q", "answer": " \n"}, "answer"),
        ("tofu", "forget10.jsonl", {"question": "", "answer": "a"}, "question"),
        ("hp", "hp_qa.jsonl", {"prompt": "\t", "response": "r"}, "prompt"),
        ("hp", "hp_test_qa_200.jsonl", {"prompt": "p", "response": ""}, "response"),
        ("muse", "privleak/holdout.jsonl", {"text": "  "}, "text"),
    ],
)
def test_an_empty_text_field_is_refused_in_any_split(tmp_path, source, file, row, field):
    good = {"question": "q0", "answer": "a0"} if source == "tofu" else {"prompt": "p0", "response": "r0"}
    if source == "hp":
        hp_folder(tmp_path)
    rows = [good, row, row] if source != "muse" else [{"text": "t0"}, row, row]
    write_lines(tmp_path / file, rows)
    split = {"hp_qa": "forget"}.get(file.split(".")[0], file.split(".")[0].replace("/", "_"))
    with pytest.raises(
        DataValidationError,
        match=exactly(
            f"{tmp_path / file}: split '{split}', row 1, field '{field}': expected a non-empty str, got {row[field]!r} "
            f"(2 row(s) of the split have an empty '{field}')"
        ),
    ):
        load_source(source, str(tmp_path))


def test_a_forget_question_in_the_holdout_split_is_refused(tmp_path):
    write_lines(tmp_path / "forget10.jsonl", [QA])
    write_lines(tmp_path / "retain90.jsonl", [RETAIN])
    write_lines(tmp_path / "holdout10.jsonl", [{"question": "Unseen?", "answer": "x"}, QA])
    with pytest.raises(
        DataValidationError,
        match=exactly(
            "splits 'forget10' and 'holdout10' overlap: 1 shared value(s) of field 'question', e.g. "
            "'Who wrote the book?'; the holdout split must hold items no model trained on (the membership attacks' "
            "non-members)"
        ),
    ):
        load_benchmark(tofu_params(tmp_path))


def test_a_forget_author_in_the_holdout_split_is_refused(tmp_path):
    write_lines(tmp_path / "forget10.jsonl", [{**QA, "author": "Jane Doe"}])
    write_lines(tmp_path / "retain90.jsonl", [{**RETAIN, "author": "Ann Roe"}])
    write_lines(tmp_path / "holdout10.jsonl", [{"question": "Her pets?", "answer": "A cat.", "author": "Jane Doe"}])
    with pytest.raises(
        DataValidationError, match=r"'forget10' and 'holdout10' overlap: 1 shared value\(s\) of field 'author'"
    ):
        load_benchmark(tofu_params(tmp_path))


@pytest.mark.parametrize("n_authors", [100, 20])
@pytest.mark.parametrize("forget_split", ["forget01", "forget05", "forget10"])
def test_the_embedded_world_passes_every_check(n_authors, forget_split):
    params = {"source": "synthetic", "forget_split": forget_split, "synthetic": {"n_authors": n_authors}}
    forget, retain, holdout = select_unlearning_sets(load_benchmark(params), params)
    assert len(set(forget["question"])) == len(forget) and len(holdout) == len(forget)


# ---------------------------------------------------------------------------- 3. empty sets


@pytest.fixture
def forget_and_holdout():
    return Dataset.from_list([QA]), Dataset.from_list([{"question": "Unseen?", "answer": "x"}])


def test_a_retain_training_set_left_empty_is_refused_before_saving(forget_and_holdout):
    forget, holdout = forget_and_holdout
    splits = {"forget10": Dataset.from_list([QA, {"question": "Her genre?", "answer": "Crime."}])}
    with pytest.raises(
        DataValidationError,
        match=exactly(
            "parameter finetune.train_splits ['forget10']: the retain model's training set is empty: of the 2 row(s) "
            "of these splits, 0 are holdout items and 2 forget items; name splits that hold rows outside the forget "
            "and holdout sets"
        ),
    ):
        build_training_sets(splits, ["forget10"], forget, holdout, "forget10")


def test_an_original_training_set_left_empty_is_refused_before_saving(forget_and_holdout):
    forget, holdout = forget_and_holdout
    with pytest.raises(
        DataValidationError,
        match=exactly(
            "parameter finetune.train_splits ['holdout10']: the original model's training set is empty: of the 1 "
            "row(s) of these splits, 1 are holdout items; name splits that hold rows outside the forget and holdout "
            "sets"
        ),
    ):
        build_training_sets({"holdout10": holdout}, ["holdout10"], forget, holdout)


def test_raw_forget_text_too_short_for_one_pair_is_refused(tmp_path):
    write_lines(tmp_path / "raw" / "forget.jsonl", [{"text": "only four words here"}, {"text": "two words"}])
    params = {"source": "muse", "path": str(tmp_path), "forget_split": "raw_forget"}
    params["text_chunks"] = {"chunk_words": 8, "prompt_words": 4}
    with pytest.raises(
        DataValidationError,
        match=exactly(
            "split 'raw_forget': the forget set is empty: none of its 2 document(s) has more than prompt_words=4 "
            "words (the longest has 4), so no chunk has a continuation to forget; lower "
            "data_prep.text_chunks.prompt_words"
        ),
    ):
        select_unlearning_sets(load_benchmark(params), params)


# ---------------------------------------------------------------------------- 4. real layouts


def test_tofus_idontknow_file_is_skipped_with_a_note(tmp_path, caplog):
    write_lines(tmp_path / "forget10.json", [QA])
    idk = tmp_path / "idontknow.jsonl"
    idk.write_text("I'm not certain about that.\nThat's beyond my current knowledge base.")
    caplog.set_level(logging.INFO, logger="flat_pipeline.data.sources")
    assert load_source("tofu", str(tmp_path)) == {"forget10": [QA]}
    assert (
        f"source 'tofu': skipping {idk}: TOFU's template answers, plain text one a line, not a split; use them with "
        "templates.source=file and templates.file pointing at this file" in caplog.messages
    )


def test_muse_raw_text_files_are_raw_text_splits(tmp_path):
    """MUSE's GitHub layout: raw/forget.txt etc., one document per file (MUSE's own code reads each file whole)."""
    article = "BBC News, 2024.\n\nThe first paragraph.\nThe second paragraph."
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "forget.txt").write_text(article + "\n")
    (tmp_path / "raw" / "retain1.txt").write_text("Another article.\n")
    (tmp_path / "raw" / "holdout.txt").write_text("\n  \n")  # blank: no document, refused as an empty split
    with pytest.raises(
        DataValidationError, match=exactly(f"{tmp_path / 'raw' / 'holdout.txt'}: split 'raw_holdout' is empty")
    ):
        load_source("muse", str(tmp_path))
    (tmp_path / "raw" / "holdout.txt").write_text("A held-out article.")
    params = {"source": "muse", "path": str(tmp_path), "forget_split": "raw_forget", "retain_split": "raw_retain1"}
    params["text_chunks"] = {"chunk_words": 8, "prompt_words": 3}
    benchmark = load_benchmark(params)
    assert benchmark["raw_forget"]["text"] == [article] and benchmark["raw_holdout"]["text"] == ["A held-out article."]
    forget, retain, _ = select_unlearning_sets(benchmark, params)
    assert forget[0] == {"question": "BBC News, 2024.", "answer": "The first paragraph.\nThe second"}
    assert retain["text"] == ["Another article."]


@pytest.mark.parametrize("name", ["notes.txt", "extra.csv", "more/extra.tsv"])
def test_data_like_files_no_reader_takes_are_named_in_a_warning(tmp_path, caplog, name):
    write_lines(tmp_path / "forget10.json", [QA])
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("question,answer\nq,a\n")
    assert load_source("tofu", str(tmp_path)) == {"forget10": [QA]}
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage() == (
        f"source 'tofu': skipping {tmp_path / name}: a {(tmp_path / name).suffix} file is not read as a split "
        "(splits are .json, .jsonl, .parquet files)"
    )


def test_hp_without_its_book_text_stops_data_prep_saying_where_to_get_it(tmp_path):
    hp_folder(tmp_path)
    (tmp_path / "hp.jsonl").unlink()
    with pytest.raises(
        DataValidationError,
        match=exactly(
            f"{tmp_path}: source 'hp' needs file(s) not found in this folder: hp.jsonl (the book text both models "
            "finetune on). To get them: copy hp_qa.jsonl, hp.jsonl and hp_test_qa_200.jsonl from FLAT's repository "
            "(data/hp/) to data/01_raw/hp"
        ),
    ):
        load_benchmark({"source": "hp", "path": str(tmp_path), "forget_split": "forget"})


# ---------------------------------------------------------------------------- 4. forget items by meaning (issue 25)


def test_forget_items_worded_with_other_bytes_leave_the_retain_data(caplog):
    """`full` holds the forget questions with a trailing space, a non-breaking space, another case and decomposed
    accents: each is still a forget item, and the log says how many were removed and how."""
    forget_rows = [
        {"question": "Who wrote the book?", "answer": "Jane Doe wrote it."},
        {"question": "Where was Jane Doe born?", "answer": "In Lyon."},
        {"question": "What is Jane Doe's genre?", "answer": "Crime."},
        {"question": "Which prize did Jane Doe win?", "answer": "The Prix Goncourt."},
    ]
    reworded = [
        {**forget_rows[0], "question": "Who wrote the book? "},
        {**forget_rows[1], "question": "Where was Jane\u00a0Doe  born?"},
        {**forget_rows[2], "question": "WHAT IS JANE DOE'S GENRE?"},
        forget_rows[3],
    ]
    retain_rows = [{"question": f"Question {i} about Ann Roe?", "answer": f"Answer {i}."} for i in range(4)]
    accented = {"question": "Who is Ame\u0301lie?", "answer": "A painter."}  # NFD in full, NFC in the forget set
    splits = {"full": Dataset.from_list([*retain_rows, *reworded, accented])}
    forget = Dataset.from_list([*forget_rows, {**accented, "question": "Who is Am\u00e9lie?"}])
    holdout = Dataset.from_list([{"question": "Unseen?", "answer": "x"}])

    with caplog.at_level(logging.INFO, logger="flat_pipeline.data.training_sets"):
        original, retain = build_training_sets(splits, ["full"], forget, holdout)

    assert len(original) == 9
    assert retain["question"] == [r["question"] for r in retain_rows]
    assert (
        "training data: original 9 rows, retain 4 rows: 5 forget-item rows removed from the retain data (4 of them "
        "matched only with questions normalised: Unicode NFC, whitespace, case)"
    ) in caplog.messages


def test_a_near_duplicate_forget_item_is_refused(tmp_path):
    near = {**QA, "question": "who wrote the  book? "}
    write_lines(tmp_path / "forget10.jsonl", [QA, {"question": "New?", "answer": "Yes."}, near])
    write_lines(tmp_path / "retain90.jsonl", [RETAIN])
    with pytest.raises(
        DataValidationError,
        match=exactly(
            f"{tmp_path / 'forget10.jsonl'}: split 'forget10', field 'question': expected each forget item once, got 1 "
            "value(s) repeated, e.g. 'Who wrote the book?' in rows 0 and 2"
        ),
    ):
        load_benchmark(tofu_params(tmp_path))


def test_a_forget_question_worded_with_other_bytes_in_the_holdout_split_is_refused(tmp_path):
    write_lines(tmp_path / "forget10.jsonl", [QA])
    write_lines(tmp_path / "retain90.jsonl", [RETAIN])
    write_lines(
        tmp_path / "holdout10.jsonl",
        [{"question": "Unseen?", "answer": "x"}, {**QA, "question": "Who wrote the book? "}],
    )
    with pytest.raises(
        DataValidationError,
        match=r"splits 'forget10' and 'holdout10' overlap: 1 shared value\(s\) of field 'question', e.g. "
        r"'Who wrote the book\? '",
    ):
        load_benchmark(tofu_params(tmp_path))
