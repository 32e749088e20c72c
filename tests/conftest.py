"""Shared fixtures: the small synthetic world and a tiny random model are built once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from flat_pipeline.data.world import WorldConfig, generate_world  # noqa: E402

# a fresh copy of the project for KedroSession runs, and copies after a default run and after a benchmark run, shared
# by the tests that read them
from tests.kedro_runs import benchmarked_project, default_run_project, project  # noqa: E402, F401

# a throw-away PostgreSQL server for the cluster tests
from tests.services import postgres  # noqa: E402, F401


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """`make test` runs two pytest-xdist workers, each with its own session fixtures: every test that needs the shared
    default run (minutes to build; the benchmarked and tuned projects are clones of it) goes to one worker."""
    for item in items:
        if "default_run_project" in getattr(item, "fixturenames", ()):  # the fixture closure: clones included
            item.add_marker(pytest.mark.xdist_group("shared_runs"))


@pytest.fixture(autouse=True)
def _no_tracking_uri_from_other_tests():
    """mlflow.set_tracking_uri sets MLFLOW_TRACKING_URI, which mlflow.yml follows and `kedro run` subprocesses inherit:
    a test starts and ends without another test's store."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One thread: with another process on the second core, two threads ran 4-8x slower (spec/feasibility §7)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def small_world():
    return generate_world(WorldConfig(n_authors=20, seed=0))


@pytest.fixture(scope="session")
def forget_templates(small_world):
    """The small world's forget10 items, each with two template answers (FLAT's unlearning input)."""
    from datasets import Dataset

    rows = small_world["forget10_perturbed"]
    return Dataset.from_dict(
        {
            "prompt": [r["question"] for r in rows],
            "forget_answer": [r["answer"] for r in rows],
            "template_answers": [["I don't know.", "I have no idea."]] * len(rows),
        }
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, small_world):
    """A randomly initialised 1-layer Llama with a BPE tokenizer trained on the small world, saved to disk."""
    from flat_pipeline.models.llama import build_llama
    from flat_pipeline.models.tokenizer import train_bpe_tokenizer

    texts = [f"{r['question']} {r['answer']}" for r in small_world["full"]]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=1024)
    model = build_llama(tokenizer, hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    path = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
