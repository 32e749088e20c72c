"""How an environment's finetune was sized: the original model's teacher-forced exact match on its own training QA
and the finetune's time, for the environment's settings and the alternatives they were chosen over.

Each setting finetunes a fresh original model in memory (nothing saved or logged) with the environment's parameters
and a few overrides; the exact-match floor is off, so settings that fall short are measured instead of refused. It
prints a markdown table (`--out` also writes it). Run it with nothing else on the machine: times are wall seconds.

    .venv/bin/python benchmarks/size_finetune.py                 # conf/test: the 20-author test world
    .venv/bin/python benchmarks/size_finetune.py --env local     # the default world: length-grouped or random batches
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from kedro.framework.project import settings
from kedro.framework.startup import bootstrap_project

from flat_pipeline.pipelines.data_prep.nodes import load_benchmark, select_unlearning_sets
from flat_pipeline.pipelines.finetune.nodes import build_training_sets, finetune_model, prepare_tokenizer

PROJECT = Path(__file__).resolve().parents[1]
QA_SPLITS = ["full", "real_authors", "world_facts"]

# per environment: setting -> overrides of its parameters ({}: as committed)
SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "test": {
        "as committed": {},
        "length-grouped batches": {"finetune": {"training": {"group_by_length": True}}},
        "passages added": {"finetune": {"train_splits": [*QA_SPLITS, "passages"]}},
        "12 epochs": {"finetune": {"training": {"num_train_epochs": 12}}},
        "2 layers, vocabulary 4096": {
            "model": {"tokenizer": {"vocab_size": 4096}, "tiny_llama": {"num_hidden_layers": 2}}
        },
        "before #16: hidden 32, vocabulary 1024, 2 epochs at 3e-3, grouped, passages": {
            "model": {"tokenizer": {"vocab_size": 1024}, "tiny_llama": {"hidden_size": 32}},
            "finetune": {
                "train_splits": [*QA_SPLITS, "passages"],
                "training": {"learning_rate": 3.0e-3, "num_train_epochs": 2, "group_by_length": True},
            },
        },
    },
    "local": {
        "as committed (length-grouped batches)": {},
        "random batches": {"finetune": {"training": {"group_by_length": False}}},
    },
}


def merged(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for key, value in overrides.items():
        out[key] = merged(params.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def measure(params: dict[str, Any]) -> tuple[float, float, int]:
    """(teacher-forced exact match, finetune seconds, training rows) of a fresh original model."""
    data_prep = params["data_prep"]
    benchmark = load_benchmark(data_prep)
    forget, _, holdout = select_unlearning_sets(benchmark, data_prep)
    original_rows, _ = build_training_sets(benchmark, forget, holdout, params["finetune"], data_prep)
    tokenizer = prepare_tokenizer(benchmark, params["model"])
    _, history = finetune_model(original_rows, tokenizer, params["model"], params["finetune"], "original")
    return history["train_exact_match"][0]["value"], history["train_seconds"][0]["value"], len(original_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(SETTINGS), default="test")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()

    bootstrap_project(PROJECT)
    loader = settings.CONFIG_LOADER_CLASS(
        conf_source=str(PROJECT / "conf"), env=args.env, **settings.CONFIG_LOADER_ARGS
    )
    params = loader["parameters"]
    params = merged(params, {"finetune": {"min_train_exact_match": None}})  # measure, don't refuse
    lines = [
        f"# Finetune sizing, `--env {args.env}` ({date.today()}, {platform.machine()}, "
        f"`.venv/bin/python benchmarks/size_finetune.py --env {args.env}`)",
        "",
        "| setting | training rows | teacher-forced exact match | finetune seconds |",
        "|---|---:|---:|---:|",
    ]
    started = time.perf_counter()
    for name, overrides in SETTINGS[args.env].items():
        exact_match, seconds, rows = measure(merged(params, overrides))
        lines.append(f"| {name} | {rows} | {exact_match:.3f} | {seconds:.0f} |")
        print(lines[-1], flush=True)
    threads = params["finetune"].get("num_threads") or "torch's default"
    lines += ["", f"Total {time.perf_counter() - started:.0f} s; torch threads: {threads}."]
    table = "\n".join(lines) + "\n"
    print("\n" + table)
    if args.out:
        args.out.write_text(table)


if __name__ == "__main__":
    main()
