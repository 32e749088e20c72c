"""kedro-viz's view of the project, read from what `kedro viz build` writes (the JSON its web app is served from):
every dataset sits in a layer, in data-flow order; every node carries its stage's tag; collapsed, the benchmark is
one box per method feeding the leaderboard; and the project's own datasets preview as tables."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DatasetError, Version
from kedro.pipeline import Node

from flat_pipeline.io import BenchmarkSourceDataset, HFModelDataset, JSONDataset
from flat_pipeline.pipelines.benchmark.pipeline import BENCHMARK_METHODS, SHARED, summary_of
from tests.kedro_runs import copy_project

# one `kedro viz build` (the module's fixture) per test session, not one per pytest-xdist worker
pytestmark = pytest.mark.xdist_group("viz")

# conf/base/catalog.yml's layers, in the order the data flows (the folder numbers 01_raw ... 08_reporting; the
# template answers, 03_primary before the base model could write them, are now the unlearning's model_input)
LAYERS = ["raw", "intermediate", "model_input", "models", "model_output", "reporting"]
TAGS = {"data", "train", "unlearn", "evaluate", "report"}
VERSION = "2026-01-01T00.00.00.000Z"
SUMMARY = {"model": "data/06_models/benchmark/npo", "metrics": {"forget_quality": 0.25, "privleak": float("nan")}}


def save_tiny_model(folder: Path) -> None:
    """A save_pretrained-shaped folder: config.json and 2 x 4 x 8 float32 weights (no tokenizer needed here)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    config = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "dtype": "float32", "vocab_size": 8}
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1, "hidden_size": 4}))
    save_file(
        {"model.embed_tokens.weight": np.zeros((8, 4), np.float32), "lm_head.weight": np.ones((8, 4))},
        folder / "model.safetensors",
    )


@pytest.fixture(scope="module")
def viz(tmp_path_factory):
    """`kedro viz build --include-previews` in a copy of the project (environment local, on base) holding one saved
    model and one method's summary; returns the API's JSON: `main`, `pipelines/<name>` and `nodes/<id>`."""
    project = copy_project(tmp_path_factory.mktemp("viz") / "project")
    save_tiny_model(project / "data" / "06_models" / "original_model" / VERSION / "original_model")
    summary = project / "data" / "08_reporting" / "benchmark" / "npo_evaluation_summary.json" / VERSION
    summary.mkdir(parents=True)
    (summary / "npo_evaluation_summary.json").write_text(json.dumps(SUMMARY))
    result = subprocess.run(
        [sys.executable, "-m", "kedro", "viz", "build", "--include-previews"],
        cwd=project,
        env={**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    api = project / "build" / "api"
    output = result.stdout + result.stderr
    # kedro viz build reports its own failures on stdout and exits 0
    assert result.returncode == 0 and (api / "main").is_file(), output[-3000:]
    return api, output


def pipeline(api: Path, name: str) -> dict:
    return json.loads((api / "pipelines" / name).read_text())


def pipeline_names(api: Path) -> list[str]:
    return sorted(p.name for p in (api / "pipelines").iterdir())


def test_every_dataset_has_a_layer_and_the_layers_follow_the_data(viz):
    api, output = viz
    assert "circular dependency" not in output  # kedro-viz drops the layers of a pipeline whose layers form a cycle
    for name in pipeline_names(api):
        graph = pipeline(api, name)
        nodes = {n["id"]: n for n in graph["nodes"]}
        data = {i: n for i, n in nodes.items() if n["type"] == "data"}
        assert {n["name"]: n["layer"] for n in data.values() if n["layer"] not in LAYERS} == {}, name
        assert graph["layers"], name
        # every node writes into its inputs' layer or a later one
        inputs, outputs = {}, {}
        for edge in graph["edges"]:
            source, target = nodes.get(edge["source"]), nodes.get(edge["target"])
            if source and target and source["type"] == "data" and target["type"] == "task":
                inputs.setdefault(target["name"], []).append(source)
            if source and target and source["type"] == "task" and target["type"] == "data":
                outputs.setdefault(source["name"], []).append(target)
        backwards = [
            (task, i["name"], o["name"])
            for task in outputs
            for i in inputs.get(task, [])
            for o in outputs[task]
            if LAYERS.index(o["layer"]) < LAYERS.index(i["layer"])
        ]
        assert backwards == [], name
    assert json.loads((api / "main").read_text())["layers"] == LAYERS  # the default pipeline: raw ... reporting


def test_every_node_carries_the_tag_of_its_stage(viz):
    api, _ = viz
    stage = {}
    for name in pipeline_names(api):
        for node in pipeline(api, name)["nodes"]:
            if node["type"] == "task":
                assert len(node["tags"]) == 1 and set(node["tags"]) <= TAGS, (name, node["full_name"], node["tags"])
                stage[node["full_name"]] = node["tags"][0]
    assert {tag["id"] for tag in json.loads((api / "main").read_text())["tags"]} == TAGS
    assert stage["load_benchmark_node"] == stage["build_forget_templates_node"] == "data"
    assert stage["finetune.original.finetune_model_node"] == stage["import_retain_model_node"] == "train"
    assert stage["unlearn_model_node"] == stage["npo.unlearn_model_node"] == stage["npo.method_parameters_node"]
    assert stage["unlearn_model_node"] == "unlearn"
    assert stage["unlearned.evaluate_model_node"] == stage["npo.evaluate_model_node"] == "evaluate"
    assert stage["leaderboard_node"] == stage["compare_models_node"] == "report"


def test_the_benchmark_collapses_to_one_box_per_method_feeding_the_leaderboard(viz):
    api, _ = viz
    graph = pipeline(api, "benchmark")
    # tasks by their full name (`npo.evaluate_model_node`); modular pipelines go by their namespace
    names = {n["id"]: n.get("full_name", n["name"]) for n in graph["nodes"]}
    names.update({method: method for method in BENCHMARK_METHODS})
    kinds = {n["id"]: n["type"] for n in graph["nodes"]}
    tree = graph["modular_pipelines"]
    assert set(tree) == {"__root__", *BENCHMARK_METHODS}

    # what a collapsed view shows: the root's children, parameters aside
    shown = {names[c["id"]] for c in tree["__root__"]["children"] if kinds.get(c["id"]) != "parameters"}
    artifacts = {"evaluation_items", "unlearn_metrics"}  # written, and read inside the box only (method_record)
    leaderboard = {
        f"leaderboard_{name}{suffix}" for name in ("table", "markdown", "scatter") for suffix in ("", "_artifact")
    }
    assert shown == {
        *BENCHMARK_METHODS,
        *SHARED,
        *("benchmark_splits", "forget_set", "holdout_set", "build_evaluation_sets_node", "template_pool_node"),
        *("original_evaluation_summary", "retain_evaluation_summary", "leaderboard_node", *leaderboard),
        *(summary_of(method) for method in BENCHMARK_METHODS),
    }

    edges = {(names[e["source"]], names[e["target"]]) for e in graph["edges"]}
    tasks = {n["full_name"] for n in graph["nodes"] if n["type"] == "task"}

    def readers(dataset: str) -> set[str]:
        return {target for source, target in edges if source == dataset and target in tasks}

    for method in BENCHMARK_METHODS:
        box = tree[method]
        inside = {names[c["id"]] for c in box["children"]}
        internal = {f"{method}.unlearned_model", f"{method}.unlearn_parameters"}
        internal |= {f"{method}.{artifact}" for artifact in artifacts}
        nodes = {f"{method}.{node}" for node in ("unlearn_model_node", "evaluate_model_node", "method_record_node")}
        assert internal | nodes <= inside
        assert {names[i] for i in box["inputs"] if not names[i].startswith("params:")} == SHARED
        assert {names[o] for o in box["outputs"]} == {summary_of(method)}
        assert {(method, summary_of(method)), (summary_of(method), "leaderboard_node")} <= edges
        # the leaderboard reads the summary; the box's files are read by its own last node only
        assert readers(summary_of(method)) == {"leaderboard_node"}
        assert all(readers(f"{method}.{a}") == {f"{method}.method_record_node"} for a in artifacts)
        assert all(reader.startswith(f"{method}.") for dataset in internal for reader in readers(dataset))


def test_no_node_outside_a_namespace_names_a_dataset_inside_one(monkeypatch):
    """Kedro warns once per process of a dotted dataset name in a node of another namespace (the benchmark's
    leaderboard used to read `npo.evaluation_summary`)."""
    import flat_pipeline.pipelines as package

    monkeypatch.setattr(Node, "__dotted_dataset_name_warned__", False, raising=False)  # kedro.pipeline.node's flag
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="One or more dataset names contain '.'", category=UserWarning)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}").create_pipeline()


def node_metadata(api: Path, dataset: str) -> dict:
    ids = {n["name"]: n["id"] for name in pipeline_names(api) for n in pipeline(api, name)["nodes"]}
    return json.loads((api / "nodes" / ids[dataset]).read_text())


def test_the_projects_datasets_preview_as_tables(viz):
    api, _ = viz
    model = node_metadata(api, "original_model")
    assert model["preview_type"] == "TablePreview" and model["preview"]["columns"] == ["property", "value"]
    rows = dict(model["preview"]["data"])
    assert rows["architectures"] == "LlamaForCausalLM" and rows["model_type"] == "llama"
    assert rows["parameters"] == "64" and rows["vocab_size"] == 8 and rows["dtype"] == "float32"
    assert rows["num_hidden_layers"] == 1 and rows["hidden_size"] == 4

    summary = node_metadata(api, summary_of("npo"))  # preview_args: {key: metrics} in the catalog
    assert summary["preview_type"] == "TablePreview"
    assert summary["preview"]["data"] == [["forget_quality", 0.25], ["privleak", "nan"]]

    source = node_metadata(api, "benchmark_source")  # base: the synthetic world
    assert source["preview"]["data"] == [["synthetic world", "no files: data_prep generates it"]]
    assert node_metadata(api, "benchmark_splits")["filepath"].endswith("data/01_raw/benchmark_splits")


def test_previews_name_what_they_cannot_show(tmp_path):
    summary = JSONDataset(filepath=str(tmp_path / "summary.json"), version=Version(None, None))
    summary.save({"model": "m", "metrics": {"forget_quality": 1.0}, "retain_reference": {"forget_split": "f10"}})
    assert summary.preview()["data"] == [
        ["model", "m"],
        ["metrics.forget_quality", 1.0],
        ["retain_reference.forget_split", "f10"],
    ]
    with pytest.raises(KeyError, match=r"summary.json: preview_args key 'scores': no such mapping \(found \['metrics'"):
        summary.preview(key="scores")
    history = JSONDataset(filepath=str(tmp_path / "history.json"))  # a training history: each metric's last value
    history.save({"train_loss": [{"step": 5, "value": 2.5}, {"step": 10, "value": 1.25}], "train_seconds": []})
    assert history.preview()["data"] == [["train_loss", "1.25 at step 10 (2 values)"], ["train_seconds", "[0 values]"]]
    with pytest.raises(DatasetError, match="Did not find any versions"):
        HFModelDataset(filepath=str(tmp_path / "model"), version=Version(None, None)).preview()

    (tmp_path / "tofu" / "forget10").mkdir(parents=True)
    (tmp_path / "tofu" / "forget10" / "train.parquet").write_bytes(b"x" * 2000)
    (tmp_path / "tofu" / ".cache").mkdir()
    (tmp_path / "tofu" / ".cache" / "lock").write_text("")
    files = BenchmarkSourceDataset(location=str(tmp_path / "tofu")).preview()
    assert files["columns"] == ["file", "size"] and files["data"] == [["forget10/train.parquet", "2.0 kB"]]
    hub = BenchmarkSourceDataset(location="locuslab/TOFU").preview()["data"]
    assert hub == [["locuslab/TOFU", "not a local file or folder: a hub id, or not downloaded"]]
