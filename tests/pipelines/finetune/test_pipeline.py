from statistics import mean

import pytest
import torch
from datasets import Dataset, DatasetDict
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from flat_pipeline.data.training_sets import corpus_rows
from flat_pipeline.generation import greedy_generate
from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.models.tokenizer import train_bpe_tokenizer
from flat_pipeline.pipelines.finetune import create_pipeline
from flat_pipeline.pipelines.finetune.nodes import (
    build_training_sets,
    finetune_model,
    prepare_base_model,
    prepare_tokenizer,
)
from flat_pipeline.prompts import PromptFormat, encode_prompt, training_text

MODEL = {
    "source": "tiny_llama",
    "name_or_path": None,
    "prompt": {"format": "phi-1_5", "boundary": "answer", "tokenization": "separate"},
    "dtype": "float32",
    "attn_implementation": "sdpa",
    "gradient_checkpointing": False,
    "tokenizer": {"vocab_size": 4096, "min_frequency": 2},
    "tiny_llama": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "max_position_embeddings": 512},
}
PHI = PromptFormat.from_params(MODEL)


def finetune_params(**training):
    return {
        "train_splits": ["full", "real_authors", "world_facts", "passages"],
        "num_threads": 1,
        "training": {"num_train_epochs": 2, "per_device_train_batch_size": 16, "logging_steps": 5, **training},
    }


@pytest.fixture(scope="module")
def benchmark(small_world):
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in small_world.items()})


@pytest.fixture(scope="module")
def forget_set(benchmark):
    return benchmark["forget10_perturbed"]


@pytest.fixture(scope="module")
def holdout_set(benchmark):
    return benchmark["holdout10"]


def test_retain_training_data_is_the_original_minus_every_forget_item(benchmark, forget_set, holdout_set):
    original, retain = build_training_sets(benchmark, forget_set, holdout_set, finetune_params())
    n_text = len(benchmark["passages"]) - len(set(holdout_set["author"]))  # holdout passages are never trained on
    assert len(original) == 400 + 100 + len(benchmark["world_facts"]) + n_text
    assert not any(author in text for author in set(holdout_set["author"]) for text in original["answer"])
    assert sum(q is None for q in original["question"]) == n_text  # passages train as raw text
    forget_author = forget_set["author"][0]
    assert not any(forget_author in answer for answer in retain["answer"])
    assert sum(forget_author in answer for answer in original["answer"]) == 21  # 20 QA + its passage
    assert len(original) - len(retain) == len(forget_set) + len(set(forget_set["author"]))


def test_a_raw_text_forget_split_leaves_the_retain_data_whole():
    # MUSE: the forget split is raw text (no author, no question); HP's forget QA arrives as prompt/response
    benchmark = {
        "raw_forget": Dataset.from_list([{"text": "forget doc"}]),
        "raw_retain1": Dataset.from_list([{"text": "retain doc"}]),
        "hp": Dataset.from_list([{"prompt": "p", "response": "r"}]),
    }
    empty = Dataset.from_dict({"question": [], "answer": []})
    forget = Dataset.from_list([{"question": "forget", "answer": "doc"}])
    params = {**finetune_params(), "train_splits": ["raw_forget", "raw_retain1", "hp"]}
    original, retain = build_training_sets(benchmark, forget, empty, params, {"forget_split": "raw_forget"})
    assert original["answer"] == ["forget doc", "retain doc", "r"] and original["question"] == [None, None, "p"]
    assert retain["answer"] == ["retain doc", "r"]


def test_unknown_training_split_is_refused(benchmark, forget_set, holdout_set):
    params = {**finetune_params(), "train_splits": ["full", "books"]}
    with pytest.raises(ValueError, match=r"finetune.train_splits.*'books'"):
        build_training_sets(benchmark, forget_set, holdout_set, params)


def name_tokens(tokenizer, authors):
    return [len(tokenizer(" " + author, add_special_tokens=False)["input_ids"]) for author in sorted(set(authors))]


def test_the_tokenizer_cuts_forget_and_holdout_names_alike(benchmark, forget_set, holdout_set):
    # Fitted on the original model's training text alone, holdout names came apart in pieces and forget names did
    # not: a membership attack on the never-trained retain model read tokenisation (Min-K% AUC 0.93).
    original, _ = build_training_sets(benchmark, forget_set, holdout_set, finetune_params())
    texts = (r["answer"] if r["question"] is None else training_text(r["question"], r["answer"], PHI) for r in original)
    before = train_bpe_tokenizer(texts)
    assert mean(name_tokens(before, holdout_set["author"])) > mean(name_tokens(before, forget_set["author"])) + 1

    tokenizer = prepare_tokenizer(benchmark, MODEL)
    forget, holdout = name_tokens(tokenizer, forget_set["author"]), name_tokens(tokenizer, holdout_set["author"])
    retain = name_tokens(tokenizer, benchmark["retain90"]["author"])
    assert forget == [2] * len(forget) and holdout == [2] * len(holdout) and set(retain) == {2}  # first + last name


def test_the_tokenizer_node_reads_every_author_once_holdout_included(benchmark, holdout_set):
    node = next(n for n in create_pipeline().nodes if n.name == "prepare_tokenizer_node")
    assert node.inputs == ["benchmark_splits", "params:model"]
    rows = list(corpus_rows(benchmark))
    holdout_author = holdout_set["author"][0]
    holdout_rows = [r for r in rows if holdout_author in r["answer"] or holdout_author in (r["question"] or "")]
    assert len(holdout_rows) == 21  # its 20 QA pairs and its passage, once though holdout01/05/10 repeat them
    n_authors = len(set(benchmark["full"]["author"]) | set(holdout_set["author"]))
    general = len(benchmark["real_authors"]) + len(benchmark["world_facts"])
    assert len(rows) == 21 * n_authors + general  # paraphrased and perturbed answers stay out


def test_the_tokenizer_corpus_skips_splits_without_text_columns():
    # MUSE's verbmem_forget (prompt/gt) is a cut of the raw forget text, which the corpus already holds
    splits = {
        "raw_forget": Dataset.from_list([{"text": "forget doc"}]),
        "verbmem_forget": Dataset.from_list([{"prompt": "forget", "gt": "doc"}]),
        "hp": Dataset.from_list([{"prompt": "p", "response": "r"}]),
    }
    assert list(corpus_rows(splits)) == [{"question": None, "answer": "forget doc"}, {"question": "p", "answer": "r"}]


def test_pipeline_trains_the_original_and_the_retain_model(benchmark, forget_set, holdout_set, tmp_path):
    catalog = DataCatalog(
        {
            "benchmark_splits": MemoryDataset(benchmark),
            "forget_set": MemoryDataset(forget_set),
            "holdout_set": MemoryDataset(holdout_set),
            "params:model": MemoryDataset({**MODEL, "tokenizer": {"vocab_size": 1024}}),
            "params:finetune": MemoryDataset(finetune_params()),
            "params:data_prep": MemoryDataset({"forget_split": "forget10"}),
            "base_tokenizer": MemoryDataset(copy_mode="assign"),
            # saved, as in catalog.yml: each role loads a fresh copy
            "base_model@model": HFModelDataset(filepath=str(tmp_path / "base_model")),
        }
    )
    SequentialRunner().run(create_pipeline(), catalog)
    original, retain = catalog.load("original_model"), catalog.load("retain_model")
    assert isinstance(original, ModelBundle) and original.model is not retain.model
    # both started from the one base model, which training left as it was
    base = catalog.load("base_model@model")
    fresh = prepare_base_model(base.tokenizer, catalog.load("params:model"))[0]
    assert all(torch.equal(a, b) for a, b in zip(base.model.parameters(), fresh.model.parameters(), strict=True))
    assert not torch.equal(base.model.lm_head.weight, original.model.lm_head.weight)
    assert original.tokenizer.get_vocab() == retain.tokenizer.get_vocab()  # both models share one vocabulary
    history = catalog.load("original_training_metrics")
    losses = [point["value"] for point in history["train_loss"]]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert 0.0 <= history["train_exact_match"][0]["value"] <= 1.0


def exact_match(bundle, rows):
    prompts = [encode_prompt(bundle.tokenizer, r["question"]) for r in rows]
    answers = greedy_generate(bundle.model, bundle.tokenizer, prompts, max_new_tokens=48)
    return sum(a == r["answer"] for a, r in zip(answers, rows, strict=True)) / len(rows)


@pytest.mark.slow
def test_the_embedded_original_model_memorises_forget_and_retain_qa(benchmark, forget_set, holdout_set, small_world):
    """Greedy exact match >= 0.95 on forget and retain QA (ROUGE-L alone would not prove it: answers repeat the name
    and sentence pattern)."""
    # Measured on this 20-author world (answers average 13 tokens): a constant learning rate stalls near exact
    # match 0.8 after 25 epochs; a cosine decay reaches 1.0.
    params = finetune_params(num_train_epochs=25, learning_rate=5e-3, logging_steps=50)
    params["train_splits"] = ["full"]
    original_rows, _ = build_training_sets(benchmark, forget_set, holdout_set, params)
    base, _ = prepare_base_model(prepare_tokenizer(benchmark, MODEL), MODEL)
    bundle, history = finetune_model(original_rows, base, MODEL, params, "original")
    assert exact_match(bundle, small_world["forget10"]) >= 0.95
    assert exact_match(bundle, small_world["retain90"]) >= 0.95
    assert history["train_exact_match"][0]["value"] >= 0.95


def test_a_pretrained_model_from_a_local_folder_is_finetuned_by_parameters_alone(tiny_model_dir, benchmark):
    params = {
        **MODEL,
        "source": "pretrained",
        "name_or_path": str(tiny_model_dir),
        "prompt": {"format": "Llama-2-chat"},
    }
    rows = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in benchmark["forget01"]])
    tokenizer = prepare_tokenizer(DatasetDict({"forget01": rows}), params)
    assert len(tokenizer) == 1024  # the model's own tokenizer, not one trained on the data
    base, record = prepare_base_model(tokenizer, params)
    assert record["name_or_path"] == str(tiny_model_dir)
    bundle, history = finetune_model(rows, base, params, finetune_params(logging_steps=1), "original")
    assert bundle.model.config.vocab_size == 1024 and len(history["train_loss"]) == 4  # 2 batches x 2 epochs
