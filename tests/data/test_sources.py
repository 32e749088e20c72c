import json

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flat_pipeline.data.sources import (
    DataValidationError,
    UnlearningSplits,
    check_disjoint,
    load_source,
    read_split_files,
    resolve_roles,
)

TOFU_FIELDS = ("question", "answer")


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")


def strip(rows, fields=TOFU_FIELDS):
    return [{k: r[k] for k in fields} for r in rows]


@pytest.fixture
def tofu_dir(tmp_path, small_world):
    """TOFU's splits in every format it is published in: JSON lines in .json, .jsonl, parquet shards, save_to_disk."""
    root = tmp_path / "tofu"
    write_jsonl(root / "forget10.json", strip(small_world["forget10"]))
    write_jsonl(root / "retain90.jsonl", strip(small_world["retain90"]))
    (root / "forget10_perturbed").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(small_world["forget10_perturbed"]),
        root / "forget10_perturbed" / "train-00000-of-00001.parquet",
    )
    datasets.Dataset.from_list(small_world["holdout10"]).save_to_disk(str(root / "holdout10"))
    pq.write_table(pa.Table.from_pylist(small_world["real_authors_perturbed"]), root / "real_authors_perturbed.parquet")
    return root


def test_tofu_files_in_every_format_load_as_named_splits(tofu_dir, small_world):
    splits = load_source("tofu", str(tofu_dir))
    assert sorted(splits) == ["forget10", "forget10_perturbed", "holdout10", "real_authors_perturbed", "retain90"]
    assert splits["forget10"] == strip(small_world["forget10"])
    assert splits["forget10_perturbed"] == small_world["forget10_perturbed"]
    assert splits["holdout10"] == small_world["holdout10"]
    assert splits["real_authors_perturbed"] == small_world["real_authors_perturbed"]


def test_a_saved_dataset_dict_loads_with_its_split_names(tmp_path, small_world):
    folder = tmp_path / "tofu_dict"
    datasets.DatasetDict(
        {
            "forget05": datasets.Dataset.from_list(strip(small_world["forget05"])),
            "retain95": datasets.Dataset.from_list(strip(small_world["retain95"])),
        }
    ).save_to_disk(str(folder))
    splits = load_source("tofu", str(folder))
    assert sorted(splits) == ["forget05", "retain95"]
    assert len(splits["retain95"]) == len(small_world["retain95"])


def test_json_array_and_columnar_json_are_read(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    (tmp_path / "forget01.json").write_text(json.dumps(rows))
    (tmp_path / "retain99.json").write_text(json.dumps({"question": ["q3"], "answer": ["a3"]}))
    splits = load_source("tofu", str(tmp_path))
    assert splits == {"forget01": rows, "retain99": [{"question": "q3", "answer": "a3"}]}


def test_hp_jsonl_files_map_to_forget_and_evaluation_splits(tmp_path):
    write_jsonl(tmp_path / "hp_qa.jsonl", [{"prompt": "Continue: The boy", "response": "who lived."}])
    write_jsonl(tmp_path / "hp_test_qa_200.jsonl", [{"prompt": "Expand on this snippet: A", "response": "B"}])
    write_jsonl(tmp_path / "hp.jsonl", [{"text": "Some book text."}])
    splits = load_source("hp", str(tmp_path))
    assert sorted(splits) == ["forget", "hp_test_qa_200", "text"]
    assert resolve_roles("hp", list(splits), "forget") == UnlearningSplits("forget", None, None)


def test_flats_whole_hp_folder_loads_with_its_hp_qa_k_files_as_splits(tmp_path):
    """FLAT's data/hp also holds hp_qa_{50,100,200,300}.jsonl (taken to be in hp_qa's prompt/response format):
    copied along with the rest, they are splits of their own, not the forget set (hp_qa.jsonl)."""
    write_jsonl(tmp_path / "hp_qa.jsonl", [{"prompt": "Continue: The boy", "response": "who lived."}])
    write_jsonl(tmp_path / "hp.jsonl", [{"text": "Some book text."}])
    for k in (50, 100, 200, 300):
        write_jsonl(tmp_path / f"hp_test_qa_{k}.jsonl", [{"prompt": f"Expand on this snippet: {k}", "response": "B"}])
        write_jsonl(tmp_path / f"hp_train_qa_{k}.jsonl", [{"prompt": f"Can you finish this: {k}", "response": "B"}])
        write_jsonl(tmp_path / f"hp_qa_{k}.jsonl", [{"prompt": f"The boy {k}", "response": "who lived."}])
    splits = load_source("hp", str(tmp_path))
    assert {f"hp_qa_{k}" for k in (50, 100, 200, 300)} < set(splits)
    assert splits["hp_qa_50"] == [{"prompt": "The boy 50", "response": "who lived."}]
    assert splits["forget"] == [{"prompt": "Continue: The boy", "response": "who lived."}]
    assert resolve_roles("hp", list(splits), "forget") == UnlearningSplits("forget", None, None)


def test_muse_folders_load_with_config_prefixed_split_names(tmp_path):
    (tmp_path / "verbmem").mkdir()
    (tmp_path / "verbmem" / "forget.json").write_text(json.dumps([{"prompt": "p", "gt": "g"}]))
    (tmp_path / "knowmem").mkdir()
    for name in ("forget_qa", "retain_qa", "forget_qa_icl"):
        (tmp_path / "knowmem" / f"{name}.json").write_text(json.dumps([{"question": "q", "answer": "a"}]))
    for name in ("forget", "retain1", "holdout"):
        write_jsonl(tmp_path / "raw" / f"{name}.jsonl", [{"text": f"{name} document"}])
    splits = load_source("muse", str(tmp_path))
    assert sorted(splits) == [
        "knowmem_forget_qa",
        "knowmem_forget_qa_icl",
        "knowmem_retain_qa",
        "raw_forget",
        "raw_holdout",
        "raw_retain1",
        "verbmem_forget",
    ]
    roles = resolve_roles("muse", list(splits), "raw_forget", "raw_retain1", "raw_holdout")
    check_disjoint(splits[roles.forget], splits[roles.retain], roles)


def test_synthetic_source_validates_and_derives_tofu_roles(small_world):
    splits = load_source("synthetic", synthetic={"n_authors": 20})
    assert splits == small_world
    roles = resolve_roles("synthetic", list(splits), "forget05")
    assert roles == UnlearningSplits("forget05_perturbed", "retain95", "holdout05")


# ------------------------------------------------------------------------------------ bad input


def test_missing_field_names_file_split_and_field(tmp_path):
    write_jsonl(tmp_path / "forget10.json", [{"question": "q", "answer": "a"}, {"question": "q2"}])
    with pytest.raises(DataValidationError) as err:
        load_source("tofu", str(tmp_path))
    message = str(err.value)
    assert "forget10.json" in message and "'forget10'" in message and "'answer'" in message and "row 1" in message


def test_wrong_type_names_the_field_and_the_expected_type(tmp_path):
    row = {"question": "q", "answer": "a", "paraphrased_answer": "p", "perturbed_answer": "not a list"}
    write_jsonl(tmp_path / "forget10_perturbed.jsonl", [row])
    with pytest.raises(DataValidationError, match=r"forget10_perturbed.*'perturbed_answer'.*list of str"):
        load_source("tofu", str(tmp_path))


def test_empty_split_is_refused(tmp_path):
    (tmp_path / "retain90.jsonl").write_text("")
    with pytest.raises(DataValidationError, match=r"retain90.jsonl: split 'retain90' is empty"):
        load_source("tofu", str(tmp_path))


def test_unknown_split_file_is_refused(tmp_path):
    write_jsonl(tmp_path / "forget11_extra.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(DataValidationError, match=r"unknown split 'forget11_extra'"):
        load_source("tofu", str(tmp_path))


def test_unknown_split_parameter_lists_what_is_available(small_world):
    with pytest.raises(DataValidationError, match=r"data_prep.forget_split: expected one of forget01, forget05"):
        resolve_roles("synthetic", list(small_world), "retain90")
    with pytest.raises(DataValidationError, match=r"split 'forget20' not found.*available: forget01"):
        resolve_roles("synthetic", list(small_world), "forget20")
    with pytest.raises(DataValidationError, match=r"data_prep.retain_split: split 'retain50' not found"):
        resolve_roles("synthetic", list(small_world), "forget10", retain_split="retain50")


def test_forget_retain_overlap_is_refused(small_world):
    roles = UnlearningSplits("forget10", "retain90", None)
    leaked = small_world["retain90"] + small_world["forget10"][:1]
    with pytest.raises(DataValidationError, match=r"'forget10' and 'retain90' overlap.*'author'"):
        check_disjoint(small_world["forget10"], leaked, roles)
    no_author = [{"question": r["question"], "answer": r["answer"]} for r in leaked]
    with pytest.raises(DataValidationError, match=r"overlap.*'question'"):
        check_disjoint(strip(small_world["forget10"]), no_author, roles)


def test_bad_source_or_path_is_refused_before_reading(tmp_path):
    with pytest.raises(DataValidationError, match=r"data_prep.source"):
        load_source("wikipedia", str(tmp_path))
    with pytest.raises(DataValidationError, match=r"data_prep.path"):
        load_source("tofu", None)
    with pytest.raises(DataValidationError, match=r"no such file or folder"):
        read_split_files(tmp_path / "missing")
    with pytest.raises(DataValidationError, match=r"no data files"):
        read_split_files(tmp_path)


def test_missing_local_data_offline_says_what_to_download_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        DataValidationError, match=r"'locuslab/TOFU' is not a local file or folder, and the hub id"
    ) as error:
        load_source("tofu", "locuslab/TOFU")
    assert "huggingface-cli download locuslab/TOFU --repo-type dataset --local-dir data/01_raw/tofu" in str(error.value)
    with pytest.raises(DataValidationError, match=r"FLAT's repository \(data/hp/\) to data/01_raw/hp"):
        load_source("hp", str(tmp_path / "hp"))


def test_invalid_json_line_names_file_and_line(tmp_path):
    (tmp_path / "forget10.jsonl").write_text('{"question": "q", "answer": "a"}\n{"question": \n')
    with pytest.raises(DataValidationError, match=r"forget10.jsonl, line 2: not valid JSON"):
        load_source("tofu", str(tmp_path))


def test_a_json_file_of_one_record_is_one_row_and_unequal_columns_are_refused(tmp_path):
    (tmp_path / "forget01.json").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")  # one JSON line
    assert load_source("tofu", str(tmp_path)) == {"forget01": [{"question": "q", "answer": "a"}]}
    (tmp_path / "forget01.json").write_text(json.dumps({"question": ["q1", "q2"], "answer": ["a1"]}))
    with pytest.raises(
        DataValidationError, match=r"forget01.json: expected .* got a JSON object of columns of lengths"
    ):
        load_source("tofu", str(tmp_path))


def test_hp_reads_a_folder_not_a_single_file(tmp_path):
    write_jsonl(tmp_path / "hp_qa.jsonl", [{"prompt": "Continue: The boy", "response": "who lived."}])
    with pytest.raises(
        DataValidationError, match=r"data_prep.path: source 'hp' reads a folder holding hp_qa.jsonl, hp"
    ):
        load_source("hp", str(tmp_path / "hp_qa.jsonl"))
