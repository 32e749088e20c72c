"""Configuration environments for the real benchmarks, run end to end on small local files in the real formats with
a tiny model standing in for the real one."""

from __future__ import annotations

import json

import pytest

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
            "prompt_format": "plain",  # the tiny tokenizer has no chat template
            "dtype": "float32",
            "gradient_checkpointing": False,
        },
        "unlearn": {"num_train_epochs": 1, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1},
        "evaluate": {"settings": {"max_new_tokens": 12, "scoring_batch_size": 16}},
    }


def latest_json(project, pattern):
    return json.loads(sorted(project.glob(pattern))[-1].read_text())


@pytest.mark.slow
def test_tofu_environment_runs_imported_models_through_unlearn_and_evaluate(project, small_world, tiny_model_dir):
    write_tofu(project / "data" / "01_raw" / "tofu", small_world)
    params = tiny_model_params(tiny_model_dir)
    params["unlearn"]["bf16"] = False
    params["import_models"] = {"original": str(tiny_model_dir), "retain": str(tiny_model_dir)}
    run_session(project, ["import_models"], params, env="tofu")
    run_session(project, ["data_prep", "templates", "unlearn", "evaluate"], params, env="tofu")

    retain = latest_json(project, "data/08_reporting/retain_evaluation_summary.json/*/*.json")
    unlearned = latest_json(project, "data/08_reporting/unlearned_evaluation_summary.json/*/*.json")
    assert retain["metrics"]["forget_quality"] == pytest.approx(1.0)
    assert {"forget_quality", "model_utility", "privleak", "mia_min_k_plus_plus"} <= set(unlearned["metrics"])
    assert "forget_verbmem_ROUGE" not in unlearned["metrics"]  # TOFU has no passages
    assert unlearned["retain_reference"]["forget_split"] == "forget10"
    # The imported original and retain models are the same tiny model: the original matches the reference too.
    original = latest_json(project, "data/08_reporting/original_evaluation_summary.json/*/*.json")
    assert original["metrics"]["forget_quality"] == pytest.approx(1.0)

    # open-unlearning's reference log of the retain model stands in for evaluating it here
    reference = latest_json(project, "data/07_model_output/retain_reference.json/*/*.json")
    logs = {
        "forget_truth_ratio": {
            "value_by_index": {str(i): {"score": r} for i, r in enumerate(reference["forget_truth_ratio"])}
        },
        "mia_min_k": {"agg_value": reference["mia_min_k"]},
    }
    (project / "TOFU_EVAL.json").write_text(json.dumps(logs))
    params["import_models"]["retain_logs"] = "TOFU_EVAL.json"
    run_session(project, ["import_retain_logs"], params, env="tofu")
    unlearned_model = sorted(project.glob("data/06_models/unlearned_model/*/unlearned_model"))[-1]
    params["external_model"] = str(unlearned_model)
    run_session(project, ["evaluate_external"], params, env="tofu")
    external = latest_json(project, "data/08_reporting/external_evaluation_summary.json/*/*.json")
    assert external["retain_reference"]["retain_model"] == "open-unlearning log TOFU_EVAL.json"
    assert external["metrics"]["forget_quality"] == pytest.approx(unlearned["metrics"]["forget_quality"])
    assert external["metrics"]["privleak"] == pytest.approx(unlearned["metrics"]["privleak"])

    # a log of another split is refused before any model work
    logs["forget_truth_ratio"]["value_by_index"].pop("0")
    (project / "TOFU_EVAL.json").write_text(json.dumps(logs))
    with pytest.raises(Exception, match="39 forget truth ratios, but the forget split 'forget10' has 40 items"):
        run_session(project, ["import_retain_logs"], params, env="tofu")
