import json
import logging

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.data.sources import DataValidationError
from flat_pipeline.io import BenchmarkSourceDataset
from flat_pipeline.pipelines.data_prep import create_pipeline
from flat_pipeline.pipelines.data_prep.nodes import load_benchmark, load_benchmark_source, select_unlearning_sets
from tests.kedro_runs import run_session


def params(**overrides):
    return {
        "source": "synthetic",
        "path": None,
        "forget_split": "forget10",
        "retain_split": None,
        "holdout_split": None,
        "synthetic": {"n_authors": 20, "seed": 0, "holdout_percent": 10},
        **overrides,
    }


def run(p):
    catalog = DataCatalog(
        {"params:data_prep": MemoryDataset(p), "benchmark_source": BenchmarkSourceDataset(location=p["path"])}
    )
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def test_pipeline_writes_benchmark_and_role_sets(caplog):
    caplog.set_level(logging.INFO)
    catalog = run(params(forget_split="forget05"))
    forget, retain, holdout = (catalog.load(f"{role}_set") for role in ("forget", "retain", "holdout"))
    assert len(forget) == 20 and len(retain) == 380 and len(holdout) == 20
    assert {"paraphrased_answer", "perturbed_answer"} <= set(forget.column_names)
    assert set(forget["author"]).isdisjoint(retain["author"])
    assert set(holdout["author"]).isdisjoint(set(forget["author"]) | set(retain["author"]))
    assert "Pipeline execution completed successfully" in caplog.text


def test_benchmark_holds_every_split_of_the_source():
    benchmark = load_benchmark(params())
    assert {
        "full",
        "forget10_perturbed",
        "retain90",
        "holdout10",
        "retain_perturbed",
        "real_authors_perturbed",
        "world_facts_perturbed",
        "passages",
    } <= set(benchmark)
    assert len(benchmark["full"]) == 400


def test_hp_source_without_retain_data_gives_an_empty_retain_set(tmp_path):
    rows = [{"prompt": f"Continue: sentence {i}", "response": f"ending {i}"} for i in range(3)]
    (tmp_path / "hp_qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "hp.jsonl").write_text(json.dumps({"text": "The book text."}))  # HP's required files
    (tmp_path / "hp_test_qa_200.jsonl").write_text(json.dumps({"prompt": "Expand on this snippet: A", "response": "B"}))
    p = params(source="hp", path=str(tmp_path), forget_split="forget")
    forget, retain, holdout = select_unlearning_sets(load_benchmark(p), p)
    assert forget["question"] == [r["prompt"] for r in rows] and forget["answer"] == [r["response"] for r in rows]
    assert len(retain) == 0 and set(retain.column_names) == {"question", "answer"} and len(holdout) == 0


def test_muse_raw_text_becomes_prompt_continuation_pairs_and_retain_chunks(tmp_path):
    (tmp_path / "raw").mkdir()
    forget_doc = " ".join(f"f{i}" for i in range(10))
    retain_doc = " ".join(f"r{i}" for i in range(7))
    (tmp_path / "raw" / "forget.json").write_text(json.dumps([{"text": forget_doc}]))
    (tmp_path / "raw" / "retain1.json").write_text(json.dumps([{"text": retain_doc}]))
    p = params(source="muse", path=str(tmp_path), forget_split="raw_forget", retain_split="raw_retain1")
    with pytest.raises(ValueError, match="parameter data_prep.text_chunks: split 'raw_forget' is raw text"):
        select_unlearning_sets(load_benchmark(p), p)
    p["text_chunks"] = {"chunk_words": 4, "prompt_words": 2}
    forget, retain, _ = select_unlearning_sets(load_benchmark(p), p)
    # chunks of 4 words: the 2-word tail "f8 f9" has nothing after its prompt and is dropped
    assert forget.to_list() == [{"question": "f0 f1", "answer": "f2 f3"}, {"question": "f4 f5", "answer": "f6 f7"}]
    assert retain["text"] == ["r0 r1 r2 r3", "r4 r5 r6"]


def test_bad_split_parameter_stops_the_first_node():
    with pytest.raises(DataValidationError, match="data_prep.retain_split"):
        load_benchmark(params(retain_split="retain80"))


def test_the_raw_files_are_a_catalog_input_of_the_pipeline():
    assert create_pipeline().inputs() == {"benchmark_source", "params:data_prep"}
    assert BenchmarkSourceDataset(location="data/01_raw/tofu").load() == "data/01_raw/tofu"
    assert BenchmarkSourceDataset().load() is None  # the synthetic world: no files


def test_a_path_parameter_the_catalog_does_not_read_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"data_prep.path is 'elsewhere' but the catalog's benchmark_source reads "
                       r"'data/01_raw/tofu': set the path as `benchmark_path` in conf/<env>/globals.yml"):  # fmt: skip
        load_benchmark_source("data/01_raw/tofu", params(source="tofu", path="elsewhere"))
    assert len(load_benchmark_source(None, params())["full"]) == 400


def test_a_missing_raw_folder_stops_the_run_naming_it_before_anything_is_written(project):
    """conf/tofu reads data/01_raw/tofu (globals.yml benchmark_path), which a fresh copy does not have."""
    with pytest.raises(DataValidationError, match=r"data_prep.path: 'data/01_raw/tofu' is not a local file or folder"):
        run_session(project, ["data_prep"], env="tofu")
    assert not [p for p in (project / "data").rglob("*") if p.is_file() and p.name != ".gitkeep"]
    # the same files with `--params data_prep.path=...` (the catalog entry and the parameter both take it)
    with pytest.raises(DataValidationError, match=r"data_prep.path: 'nowhere/tofu' is not a local file or folder"):
        run_session(project, ["data_prep"], {"data_prep": {"path": "nowhere/tofu"}}, env="tofu")
