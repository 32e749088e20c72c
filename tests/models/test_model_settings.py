"""`model.dtype`, `model.attn_implementation` and `model.gradient_checkpointing` reach every model load: catalog
datasets (explicit entries and factory patterns, by their `load_args` and through ModelSettingsHook), folders, and the
start model of launched training workers."""

from __future__ import annotations

import logging

import pytest
import torch
import yaml
from kedro.framework.session import KedroSession
from kedro.io import Version
from kedro.pipeline import Node, Pipeline
from kedro.runner import SequentialRunner
from omegaconf import OmegaConf
from omegaconf.errors import InterpolationResolutionError

from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import build_base_model, load_causal_lm, load_settings_of

BFLOAT16_EAGER = {"dtype": "bfloat16", "attn_implementation": "eager"}


def dtype_and_attention(bundle):
    return next(bundle.model.parameters()).dtype, bundle.model.config._attn_implementation


def test_a_dataset_loads_with_the_run_settings_and_logs_them(tiny_model_dir, caplog):
    dataset = HFModelDataset(filepath=str(tiny_model_dir))
    assert dtype_and_attention(dataset.load()) == (torch.float32, "sdpa")  # without settings: from_pretrained's
    dataset.use_model_settings({"source": "tiny_llama", **BFLOAT16_EAGER, "gradient_checkpointing": True})
    with caplog.at_level(logging.INFO, logger="flat_pipeline.models.loading"):
        bundle = dataset.load()
    assert dtype_and_attention(bundle) == (torch.bfloat16, "eager")
    assert bundle.model.is_activation_checkpointing  # a loaded model may be trained on: the run's setting holds
    assert f"loading model {tiny_model_dir} (dtype bfloat16, attention eager)" in caplog.messages


def test_an_entrys_own_load_args_win(tiny_model_dir):
    dataset = HFModelDataset(filepath=str(tiny_model_dir), load_args={"dtype": "float32"})
    dataset.use_model_settings(BFLOAT16_EAGER)
    assert dtype_and_attention(dataset.load()) == (torch.float32, "eager")
    assert "'dtype': 'float32'" in str(dataset)  # what it loads with, as Kedro logs it


def test_the_tiny_llama_logs_what_it_is_built_with(tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    tiny = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    params = {"source": "tiny_llama", **BFLOAT16_EAGER, "tiny_llama": tiny}
    with caplog.at_level(logging.INFO, logger="flat_pipeline.models.loading"):
        bundle = build_base_model(params, AutoTokenizer.from_pretrained(tiny_model_dir))
    assert dtype_and_attention(bundle) == (torch.bfloat16, "eager")
    assert "building the tiny Llama in memory (dtype bfloat16, attention eager)" in caplog.messages


def test_a_launched_worker_loads_its_start_model_as_the_run_did(tiny_model_dir, tmp_path):
    """launch.run hands the workers `load_settings_of` the model; they load its saved copy with them."""
    bundle = load_causal_lm(str(tiny_model_dir), "bfloat16", "eager", gradient_checkpointing=True)
    settings = load_settings_of(bundle.model)
    assert settings == {"dtype": "bfloat16", "attn_implementation": "eager", "gradient_checkpointing": True}
    bundle.model.save_pretrained(tmp_path)
    bundle.tokenizer.save_pretrained(tmp_path)
    copy = load_causal_lm(str(tmp_path), **settings)
    assert dtype_and_attention(copy) == (torch.bfloat16, "eager") and copy.model.is_activation_checkpointing


def test_launch_hands_its_workers_the_dtype_and_attention_of_the_run(tiny_model_dir, monkeypatch):
    """launch.run -> `accelerate launch` (here: the worker's run_job in this process, training faked) -> back."""
    import subprocess
    from dataclasses import asdict
    from pathlib import Path

    from datasets import Dataset

    import flat_pipeline.training.finetune as finetune_module
    from flat_pipeline import launch
    from flat_pipeline.models.lora import LoraSettings
    from flat_pipeline.prompts import PromptFormat
    from flat_pipeline.training import worker

    started = {}

    def trained_in_worker(bundle, rows, config, prompt, *, save_to, lora, track_as):
        started["with"] = dtype_and_attention(bundle)
        bundle.model.save_pretrained(save_to)
        bundle.tokenizer.save_pretrained(save_to)
        return bundle, {}

    real_run = subprocess.run

    def accelerate_launch(cmd, **kwargs):
        if "accelerate.commands.launch" not in cmd:  # another command (git, ...): run as it is
            return real_run(cmd, **kwargs)
        job, work = cmd[-2:]
        monkeypatch.setattr(finetune_module, "finetune", trained_in_worker)  # in the worker only
        worker.run_job(job, Path(work))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(launch.subprocess, "run", accelerate_launch)
    bundle = load_causal_lm(str(tiny_model_dir), **BFLOAT16_EAGER)
    rows = {"train": Dataset.from_dict({"question": ["q"], "answer": ["a"]})}
    config, settings = finetune_module.FinetuneConfig(), launch.LaunchSettings(num_processes=2)
    extra = {"prompt": PromptFormat().to_params(), "lora": asdict(LoraSettings()), "track_as": None}
    trained, _ = launch.run("finetune", bundle, rows, config, settings, **extra)
    assert started["with"] == (torch.bfloat16, "eager")
    assert dtype_and_attention(trained) == (torch.bfloat16, "eager")


def save_version(folder, bundle):
    HFModelDataset(filepath=str(folder), version=Version(None, "2026-01-01T00.00.00.000Z")).save(bundle)


def cli_params(*items: str) -> dict:
    """`kedro run --params a.b=c,...` as the CLI hands it to the session: nested."""
    return OmegaConf.to_container(OmegaConf.from_dotlist(list(items)))


@pytest.mark.parametrize(
    ("env", "runtime_params", "expected"),
    [
        ("test", ["model.dtype=bfloat16", "model.attn_implementation=eager"], (torch.bfloat16, "eager")),
        ("tofu", [], (torch.bfloat16, "sdpa")),  # conf/tofu/parameters.yml: bfloat16
        ("test", [], (torch.float32, "sdpa")),  # base: float32
    ],
)
def test_a_kedro_session_hands_its_model_parameters_to_every_model_dataset(
    project, tiny_model_dir, env, runtime_params, expected
):
    """An explicit entry (external_model), a factory pattern's dataset ({role}_model, made only when the run asks
    for it) and an entry with its own load_args, loaded by Kedro's runner with the session's hooks."""
    bundle = load_causal_lm(str(tiny_model_dir))
    data_root = yaml.safe_load((project / "conf" / env / "globals.yml").read_text())["data_root"]
    save_version(project / data_root / "06_models" / "retain_model", bundle)
    pinned = {"type": "flat_pipeline.io.HFModelDataset", "filepath": str(tiny_model_dir)}
    pinned["load_args"] = {"dtype": "float32"}  # an entry's own: wins over the run's model.dtype
    (project / "conf" / env / "catalog_pinned.yml").write_text(yaml.safe_dump({"pinned_model": pinned}))
    loaded = {}

    def keep(external, retain, pinned):
        loaded.update(external=external, retain=retain, pinned=pinned)

    params = cli_params(*runtime_params, f"external_model={tiny_model_dir}")
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        catalog = session.load_context().catalog
        pipeline = Pipeline([Node(keep, ["external_model", "retain_model", "pinned_model"], None)])
        SequentialRunner().run(pipeline, catalog, session._hook_manager)  # the session's hooks, as `kedro run`'s
    assert dtype_and_attention(loaded["external"]) == expected
    assert dtype_and_attention(loaded["retain"]) == expected
    assert dtype_and_attention(loaded["pinned"]) == (torch.float32, expected[1])


def test_the_hook_takes_the_catalog_that_the_run_gets(tiny_model_dir):
    """`kedro run` hands before_pipeline_run the catalog its runner loads from; the hook follows it there."""
    from kedro.io import DataCatalog

    from flat_pipeline.hooks import ModelSettingsHook

    hook = ModelSettingsHook()
    made = DataCatalog(datasets={"model": HFModelDataset(filepath=str(tiny_model_dir))})
    made["parameters"] = {"model": {"dtype": "float16"}}
    hook.after_catalog_created(catalog=made, parameters={"parameters": {"model": {"dtype": "float16"}}})
    run = DataCatalog(datasets={"model": HFModelDataset(filepath=str(tiny_model_dir))})
    run["parameters"] = {"model": BFLOAT16_EAGER}
    hook.before_pipeline_run(run_params={}, pipeline=Pipeline([]), catalog=run)
    hook.before_dataset_loaded(dataset_name="model", node=None)
    assert dtype_and_attention(run.load("model")) == (torch.bfloat16, "eager")
    assert dtype_and_attention(made.load("model")) == (torch.float32, "sdpa")  # never handed the settings


@pytest.mark.parametrize(
    ("env", "runtime_params", "expected"),
    [
        ("tofu", [], (torch.bfloat16, True)),  # conf/tofu/parameters.yml: bfloat16, gradient checkpointing on
        ("test", ["model.dtype=float16", "model.gradient_checkpointing=true"], (torch.float16, True)),
        ("test", [], (torch.float32, False)),  # base
    ],
)
def test_a_notebook_catalog_load_gets_the_model_settings_with_no_dataset_hook(
    project, tiny_model_dir, env, runtime_params, expected
):
    """`catalog.load` in a notebook (Kedro's IPython extension: a session's `context.catalog`) runs no dataset hook:
    the catalog entries themselves carry `model.dtype`, `attn_implementation` and `gradient_checkpointing`."""
    data_root = yaml.safe_load((project / "conf" / env / "globals.yml").read_text())["data_root"]
    save_version(project / data_root / "06_models" / "original_model", load_causal_lm(str(tiny_model_dir)))
    params = cli_params(*runtime_params, f"external_model={tiny_model_dir}")
    with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
        catalog = session.load_context().catalog
        for name in ("original_model", "external_model"):
            model = catalog.load(name).model
            assert (next(model.parameters()).dtype, model.is_activation_checkpointing) == expected, name


def test_a_catalog_entry_naming_an_unknown_parameter_is_refused_with_its_name(tmp_path):
    from flat_pipeline.io.config_loader import ConfigLoader

    (tmp_path / "base").mkdir()
    (tmp_path / "local").mkdir()
    (tmp_path / "base" / "parameters.yml").write_text("model: {dtype: bfloat16}\n")
    entry = {"type": "flat_pipeline.io.HFModelDataset", "filepath": "m", "load_args": {"dtype": "${params:model.dtyp}"}}
    (tmp_path / "base" / "catalog.yml").write_text(yaml.safe_dump({"m": entry}))
    loader = ConfigLoader(str(tmp_path), base_env="base", default_run_env="local", runtime_params={})
    with pytest.raises(
        InterpolationResolutionError, match=r"\$\{params:model.dtyp\}: no parameter 'model.dtyp' in the parameters of"
    ):
        loader["catalog"]
    entry["load_args"]["dtype"] = "${params:model.dtype}"
    (tmp_path / "base" / "catalog.yml").write_text(yaml.safe_dump({"m": entry}))
    assert loader["catalog"]["m"]["load_args"] == {"dtype": "bfloat16"}
    loader = ConfigLoader(
        str(tmp_path), base_env="base", default_run_env="local", runtime_params={"model": {"dtype": "float16"}}
    )
    assert loader["catalog"]["m"]["load_args"] == {"dtype": "float16"}  # --params model.dtype=float16
