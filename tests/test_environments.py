"""Configuration environments for the real benchmarks, run end to end on small local files in the real formats with
a tiny model standing in for the real one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from datasets import load_from_disk

from flat_pipeline.evaluation import COPYRIGHT_METRICS
from tests.kedro_runs import run_session

TOFU_SPLITS = {  # TOFU's file names, and the fields each of its files holds
    "full": ("question", "answer"),
    "forget10": ("question", "answer"),
    "forget10_perturbed": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "retain90": ("question", "answer"),
    "retain_perturbed": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
    "real_authors_perturbed": ("question", "answer", "perturbed_answer"),
    "world_facts_perturbed": ("question", "answer", "perturbed_answer"),
    "holdout10": ("question", "answer", "paraphrased_answer", "perturbed_answer"),
}


def write_tofu(folder, world):
    """The small world as TOFU's JSON-lines files (locuslab/TOFU's layout and fields: no author field)."""
    folder.mkdir(parents=True)
    for split, fields in TOFU_SPLITS.items():
        with open(folder / f"{split}.json", "w") as out:
            for row in world[split]:
                out.write(json.dumps({f: row[f] for f in fields}) + "\n")


def tiny_model_params(tiny_model_dir):
    return {
        "model": {
            "name_or_path": str(tiny_model_dir),
            "dtype": "float32",
            "gradient_checkpointing": False,
        },
        "unlearn": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
        "evaluate": {"settings": {"max_new_tokens": 12, "scoring_batch_size": 16}},
    }


def latest_json(project, pattern):
    return json.loads(sorted(project.glob(pattern))[-1].read_text())


def latest_dataset(project, folder):
    """The latest version of a versioned ArrowDataset in the catalog."""
    return load_from_disk(str(sorted((project / folder).glob("*/*"))[-1]))


PARITY = Path(__file__).parent / "fixtures" / "open_unlearning_tiny"  # see tests/test_open_unlearning_parity.py
IDK = ["I'm not sure.", "I don't know that.", "That is beyond what I know.", "I have no idea about that."]


@pytest.mark.slow
def test_the_readme_tofu_walkthrough(project):
    """README's TOFU walk-through on local files in TOFU's layout, with idontknow.jsonl beside the splits: import
    open-unlearning-made models, evaluate them, unlearn, evaluate. The imported models' numbers are open-unlearning's
    own (the fixture's), and its retain log can stand in for the retain model."""
    raw = project / "data" / "01_raw" / "tofu"
    shutil.copytree(PARITY / "data", raw)
    (raw / "idontknow.jsonl").write_text("\n".join(IDK))  # TOFU's file: one answer a line, no trailing newline
    params = {
        # the models' template with conf/tofu's boundary and tokenization; float32 as open-unlearning scored them
        "model": {"prompt": {"format": "phi-1_5"}, "dtype": "float32"},
        "unlearn": {"num_train_epochs": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1},
        "import_models": {"original": str(PARITY / "models" / "full"), "retain": str(PARITY / "models" / "retain")},
    }
    params["unlearn"]["bf16"] = False
    run_session(project, ["import_models"], params, env="tofu")
    run_session(project, ["prepare", "evaluate_retain", "evaluate_original"], params, env="tofu")
    original = latest_json(project, "data/tofu/08_reporting/original_evaluation_summary.json/*/*.json")
    expected = json.loads((PARITY / "reference" / "full" / "TOFU_SUMMARY.json").read_text())
    for metric, value in expected.items():
        assert original["metrics"][metric] == pytest.approx(value, abs=2e-5), metric
    assert not list(project.glob("data/tofu/08_reporting/unlearned_evaluation_summary.json/*"))

    run_session(project, ["unlearn", "evaluate_unlearned"], params, env="tofu")
    templates = latest_dataset(project, "data/tofu/05_model_input/forget_templates")
    assert {t for row in templates["template_answers"] for t in row} <= set(IDK)
    unlearned = latest_json(project, "data/tofu/08_reporting/unlearned_evaluation_summary.json/*/*.json")
    assert {"forget_quality", "model_utility", "privleak", "mia_min_k_plus_plus"} <= set(unlearned["metrics"])
    assert "forget_verbmem_ROUGE" not in unlearned["metrics"]  # TOFU has no passages
    assert unlearned["retain_reference"]["forget_split"] == "forget10"

    # open-unlearning's own log of the retain model stands in for evaluating it here
    params["import_models"]["retain_logs"] = str(PARITY / "reference" / "retain" / "TOFU_EVAL.json")
    run_session(project, ["import_retain_logs"], params, env="tofu")
    unlearned_model = sorted(project.glob("data/tofu/06_models/unlearned_model/*/unlearned_model"))[-1]
    params["external_model"] = str(unlearned_model)
    run_session(project, ["evaluate_external"], params, env="tofu")
    external = latest_json(project, "data/tofu/08_reporting/external_evaluation_summary.json/*/*.json")
    assert external["retain_reference"]["retain_model"].startswith("open-unlearning log")
    assert external["metrics"]["forget_quality"] == pytest.approx(unlearned["metrics"]["forget_quality"], abs=1e-5)
    assert external["metrics"]["model_utility"] == pytest.approx(unlearned["metrics"]["model_utility"], abs=1e-6)

    # a log of another split is refused before any model work
    logs = json.loads((PARITY / "reference" / "retain" / "TOFU_EVAL.json").read_text())
    logs["forget_truth_ratio"]["value_by_index"].pop("0")
    (project / "TOFU_EVAL.json").write_text(json.dumps(logs))
    params["import_models"]["retain_logs"] = "TOFU_EVAL.json"
    with pytest.raises(Exception, match="7 forget truth ratios, but the forget split 'forget10' has 8 items"):
        run_session(project, ["import_retain_logs"], params, env="tofu")


def _write_rows(path, rows):
    """JSON lines, or a parquet shard where the name says so (the layouts the hub's converted repos use)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def world_texts(world):
    """The small world's passages by role: forget authors', holdout authors' and the others'."""
    forget = {r["author"] for r in world["forget10"]}
    holdout = {r["author"] for r in world["holdout10"]}
    texts = {"forget": [], "holdout": [], "retain": []}
    for passage in world["passages"]:
        role = "forget" if passage["author"] in forget else "holdout" if passage["author"] in holdout else "retain"
        texts[role].append(passage["text"])
    return texts


def write_muse(folder, world, suffix):
    """MUSE's layout (raw/, verbmem/, knowmem/, privleak/) and fields, built from the small world."""
    texts = world_texts(world)
    qa = lambda rows: [{"question": r["question"], "answer": r["answer"]} for r in rows]  # noqa: E731
    files = {
        "raw/forget": [{"text": t} for t in texts["forget"]],
        "raw/retain1": [{"text": t} for t in texts["retain"]],
        "raw/holdout": [{"text": t} for t in texts["holdout"]],
        "verbmem/forget": [
            {"prompt": " ".join(t.split()[:20]), "gt": " ".join(t.split()[20:])} for t in texts["forget"]
        ],
        "knowmem/forget_qa": qa(world["forget10"]),
        "knowmem/retain_qa": qa(world["retain90"][:20]),
        "knowmem/forget_qa_icl": qa(world["real_authors"][:3]),
        "knowmem/retain_qa_icl": qa(world["real_authors"][3:6]),
        "privleak/forget": [{"text": t} for t in texts["forget"]],
        "privleak/retain": [{"text": t} for t in texts["retain"][:2]],
        "privleak/holdout": [{"text": t} for t in texts["holdout"]],
    }
    for name, rows in files.items():
        _write_rows(folder / f"{name}{suffix}", rows)


# MUSE-News as hub parquet shards with released models imported; MUSE-Books as JSON with both models finetuned here
MUSE_CASES = {"muse_news": ("-00000-of-00001.parquet", False), "muse_books": (".json", True)}


@pytest.mark.slow
@pytest.mark.parametrize("env", sorted(MUSE_CASES))
def test_muse_environment_runs_through_unlearn_and_evaluate(project, small_world, tiny_model_dir, env):
    suffix, finetune = MUSE_CASES[env]
    write_muse(project / "data" / "01_raw" / env, small_world, suffix)
    params = tiny_model_params(tiny_model_dir)
    params["data_prep"] = {"text_chunks": {"chunk_words": 40, "prompt_words": 10}}
    params["unlearn"].update(bf16=False, max_length=128)
    params["evaluate"]["settings"].update(knowmem_shots=2, completion_max_new_tokens=12, max_length=128)
    if finetune:  # the target model trained here on raw forget + retain1, the retain model on retain1 alone
        params["finetune"] = {"training": {"num_train_epochs": 1, "bf16": False, "max_length": 128}}
        run_session(project, ["data_prep", "finetune"], params, env=env)
        retain_rows = latest_dataset(project, f"data/{env}/05_model_input/retain_train_set")
        assert set(retain_rows["answer"]) == set(world_texts(small_world)["retain"])
    else:  # MUSE's released target and retrain models (here the tiny model for both)
        params["import_models"] = {"original": str(tiny_model_dir), "retain": str(tiny_model_dir)}
        run_session(project, ["import_models"], params, env=env)
    run_session(project, ["data_prep", "templates", "unlearn", "evaluate"], params, env=env)

    forget_pairs = latest_dataset(project, f"data/{env}/02_intermediate/forget_set")
    assert all(len(q.split()) == 10 for q in forget_pairs["question"])  # each 40-word chunk: a 10-word prompt
    retain = latest_json(project, f"data/{env}/08_reporting/retain_evaluation_summary.json/*/*.json")
    unlearned = latest_json(project, f"data/{env}/08_reporting/unlearned_evaluation_summary.json/*/*.json")
    muse_suite = {"forget_verbmem_ROUGE", "forget_knowmem_ROUGE", "retain_knowmem_ROUGE", "privleak", "mia_min_k"}
    assert muse_suite <= set(unlearned["metrics"]) and "forget_quality" not in unlearned["metrics"]
    assert retain["metrics"]["privleak"] == pytest.approx(0.0, abs=1e-6)
    assert all(0 <= unlearned["metrics"][m] <= 1 for m in muse_suite - {"privleak"})
    items = pd.read_parquet(
        sorted(project.glob(f"data/{env}/07_model_output/unlearned_evaluation_items.parquet/*/*"))[-1]
    )
    forget_items = items[items["set"] == "forget"]  # privleak_forget's texts, scored whole
    assert sorted(forget_items["text"]) == sorted(world_texts(small_world)["forget"])


def write_hp(folder, world):
    """FLAT's HP files: hp_qa.jsonl (prompt/response), hp.jsonl (text), hp_test_qa_200.jsonl (prompt/response)."""
    texts = world_texts(world)
    _write_rows(folder / "hp_qa.jsonl", [{"prompt": r["question"], "response": r["answer"]} for r in world["forget10"]])
    _write_rows(folder / "hp.jsonl", [{"text": t} for t in texts["retain"]])
    test_rows = [
        {
            "prompt": f"Continue writing from this point: {' '.join(t.split()[:20])}",
            "response": " ".join(t.split()[20:]),
        }
        for t in texts["forget"]
    ]
    _write_rows(folder / "hp_test_qa_200.jsonl", test_rows)


@pytest.mark.slow
def test_hp_environment_finetunes_unlearns_and_reports_utility_not_run_offline(project, small_world, tiny_model_dir):
    write_hp(project / "data" / "01_raw" / "hp", small_world)
    params = tiny_model_params(tiny_model_dir)
    params["finetune"] = {"training": {"num_train_epochs": 1, "bf16": False, "max_length": 128}}
    params["unlearn"].update(bf16=False, max_length=128)
    params["evaluate"]["settings"].update(completion_max_new_tokens=12)
    params["evaluate"]["lm_eval"] = {"tasks": ["wikitext"]}
    run_session(project, None, params, env="hp")  # the default pipeline: data_prep -> ... -> evaluate

    retain_rows = latest_dataset(project, "data/hp/05_model_input/retain_train_set")
    assert retain_rows["question"] == [None] * len(retain_rows)  # the book text alone, no forget QA
    retain = latest_json(project, "data/hp/08_reporting/retain_evaluation_summary.json/*/*.json")
    unlearned = latest_json(project, "data/hp/08_reporting/unlearned_evaluation_summary.json/*/*.json")
    assert retain["metrics"]["forget_quality_gap"] == pytest.approx(0.0)
    gap = sum(abs(unlearned["metrics"][m] - retain["metrics"][m]) for m in COPYRIGHT_METRICS)
    assert unlearned["metrics"]["forget_quality_gap"] == pytest.approx(gap)
    assert set(unlearned["lm_eval_not_run"]) == {"wikitext"}
    items = pd.read_parquet(sorted(project.glob("data/hp/07_model_output/unlearned_evaluation_items.parquet/*/*"))[-1])
    prompts = items[items["set"] == "forget_completion"]["prompt"]
    assert all(p.startswith("Continue writing from this point: ") for p in prompts)
