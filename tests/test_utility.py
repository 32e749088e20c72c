"""lm-evaluation-harness utility on the tiny model: tasks over local files run, a hub task offline is reported as not
run with its reason, and the whole extra missing is reported too."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.utility import NOT_INSTALLED, LmEvalConfig, average_accuracy, lm_eval_utility

CHOICES = ["no", "yes"]
TASKS = {
    # boolq's shape (passage, question, label) as a multiple-choice task over a local JSON-lines file
    "local_boolq": """task: local_boolq
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}/boolq.jsonl
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{passage}}}}\\nQuestion: {{{{question}}}}?\\nAnswer:"
doc_to_target: label
doc_to_choice: ["no", "yes"]
metric_list:
  - metric: acc
""",
    # Wikitext's shape (whole pages, rolling log-likelihood, perplexities)
    "local_wikitext": """task: local_wikitext
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}/wikitext.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{page}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
""",
}


@pytest.fixture(scope="module")
def bundle(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir))


@pytest.fixture
def boolq_rows(small_world):
    return [
        {"passage": row["answer"], "question": row["question"].rstrip("?"), "label": i % 2}
        for i, row in enumerate(small_world["retain90"][:8])
    ]


@pytest.fixture
def task_folder(tmp_path, boolq_rows, small_world):
    (tmp_path / "boolq.jsonl").write_text("\n".join(json.dumps(r) for r in boolq_rows))
    pages = [{"page": p["text"]} for p in small_world["passages"][:3]]
    (tmp_path / "wikitext.jsonl").write_text("\n".join(json.dumps(p) for p in pages))
    for name, text in TASKS.items():
        (tmp_path / f"{name}.yaml").write_text(text.format(data=tmp_path))
    return tmp_path


def choice_logprob(bundle, context: str, choice: str) -> float:
    """log p(" choice" | context), the way lm-eval scores a multiple-choice answer (bos, context, continuation)."""
    tokenizer = bundle.tokenizer
    context_ids = [tokenizer.bos_token_id, *tokenizer(context, add_special_tokens=False)["input_ids"]]
    choice_ids = tokenizer(f" {choice}", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context_ids + choice_ids])
    with torch.no_grad():
        logprobs = bundle.model(ids).logits.log_softmax(-1)[0]
    positions = range(len(context_ids) - 1, len(context_ids) + len(choice_ids) - 1)
    return sum(logprobs[p, t].item() for p, t in zip(positions, choice_ids, strict=True))


def test_local_tasks_run_and_a_hub_task_offline_is_reported_not_run(bundle, task_folder, boolq_rows):
    config = LmEvalConfig(tasks=["local_boolq", "local_wikitext", "boolq"], include_path=str(task_folder))
    result = lm_eval_utility(bundle, config)

    expected = [
        max(
            CHOICES,
            key=lambda c, r=row: choice_logprob(bundle, f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", c),
        )
        == CHOICES[row["label"]]
        for row in boolq_rows
    ]
    assert result.metrics["lm_eval/local_boolq/acc"] == pytest.approx(sum(expected) / len(expected))
    assert result.metrics["utility_avg_acc"] == result.metrics["lm_eval/local_boolq/acc"]
    assert (
        result.metrics["lm_eval/local_wikitext/word_perplexity"]
        > result.metrics["lm_eval/local_wikitext/byte_perplexity"]
        > 1
    )
    assert set(result.not_run) == {"boolq"}
    assert "Offline" in result.not_run["boolq"] or "Connection" in result.not_run["boolq"]


def test_without_the_extra_every_task_is_reported_not_run(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import lm_eval now raises ImportError
    result = lm_eval_utility(bundle, LmEvalConfig(tasks=["wikitext", "boolq"]))
    assert result.metrics == {} and result.not_run == {"wikitext": NOT_INSTALLED, "boolq": NOT_INSTALLED}


def test_a_harness_that_cannot_start_reports_every_task_not_run(bundle, monkeypatch):
    import lm_eval.tasks

    def broken(*args, **kwargs):
        raise FileNotFoundError("no task folder")

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", broken)
    result = lm_eval_utility(bundle, LmEvalConfig(tasks=["boolq"], include_path="/nowhere"))
    assert result.not_run == {"boolq": "FileNotFoundError: no task folder"}


def test_the_task_index_is_built_once_per_include_path(bundle, monkeypatch, tmp_path):
    """Indexing lm-eval's task YAMLs takes seconds; the three evaluations of one run share one index."""
    import lm_eval.tasks

    built = []

    class CountingTaskManager:
        def __init__(self, include_path=None):
            built.append(include_path)

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", CountingTaskManager)
    for include_path in (str(tmp_path), str(tmp_path), None, None):
        result = lm_eval_utility(bundle, LmEvalConfig(tasks=["boolq"], include_path=include_path))
        assert set(result.not_run) == {"boolq"}  # the counting stand-in knows no task
    assert built == [str(tmp_path), None]


def test_average_accuracy_follows_flat_and_skips_generative_truthfulqa():
    metrics = {
        "lm_eval/boolq/acc": 0.6,
        "lm_eval/piqa/acc": 0.8,
        "lm_eval/piqa/acc_norm": 0.1,
        "lm_eval/truthfulqa_gen/acc": 0.0,
        "lm_eval/wikitext/word_perplexity": 20.0,
    }
    assert average_accuracy(metrics) == pytest.approx(0.7)
    assert average_accuracy({"lm_eval/wikitext/word_perplexity": 20.0}) is None


def test_unknown_lm_eval_parameter_names_the_block():
    with pytest.raises(ValueError, match=r"parameter evaluate.lm_eval.task: unknown key \(did you mean 'tasks'\?\)"):
        LmEvalConfig.from_params({"task": ["boolq"]})
