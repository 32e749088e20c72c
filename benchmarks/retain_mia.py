"""The membership attacks' AUCs (forget vs holdout) on a model never trained on the forget authors, and how far
from 0.5 chance puts them.

The retain model should give AUC near 0.5: nothing but chance tells its forget authors from the holdout authors.
"Near" is measured, not assumed: items of one author are not independent (same name, same facts in every answer), so
the script reshuffles which authors are called forget and which holdout (`--permutations` times, on the model's own
scores) and prints the range that 95 % of those relabellings give. An AUC far outside it says the two author groups
differ in something other than training, as they did when the tokenizer had only seen the forget authors' text
(issue #16: Min-K% AUC 0.93 for a model that never saw either group).

Default: reads the latest `{original,retain,unlearned}_evaluation_summary`, `retain_evaluation_items`, `forget_set`
and `holdout_set` under the environment's data_root (run `kedro run` first) and prints the headline numbers and the
retain model's AUCs. `--worlds 1 2`: builds the default world with each seed, trains a retain model on it with the
default parameters (in memory, nothing saved or logged) and prints its AUCs; `--corpus training` fits the tokenizer
on the original model's training text alone, as before #16.

    .venv/bin/python benchmarks/retain_mia.py [--permutations 2000] [--seed 0]
    .venv/bin/python benchmarks/retain_mia.py --worlds 1 2 [--corpus every_split|training] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from datasets import load_from_disk
from kedro.framework.project import settings
from kedro.framework.startup import bootstrap_project

from flat_pipeline.evaluation import EvaluateConfig, evaluate_retain_model
from flat_pipeline.metrics import mia
from flat_pipeline.models.loading import base_tokenizer
from flat_pipeline.pipelines.data_prep.nodes import load_benchmark, select_unlearning_sets
from flat_pipeline.pipelines.evaluate.nodes import build_evaluation_sets
from flat_pipeline.pipelines.finetune.nodes import build_training_sets, finetune_model, prepare_tokenizer
from flat_pipeline.prompts import PromptFormat, training_text

PROJECT = Path(__file__).resolve().parents[1]
ATTACKS = ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus")
HEADLINE = (
    "forget_quality",
    "model_utility",
    "forget_truth_ratio",
    "forget_Q_A_ROUGE",
    "retain_Q_A_ROUGE",
    "forget_Q_A_EM",
    "privleak",
    "forget_verbmem_ROUGE",
)
ROLES = ("original", "retain", "unlearned")


def chance_range(
    scores: np.ndarray, authors: np.ndarray, n_forget: int, permutations: int, seed: int
) -> tuple[float, float]:
    """2.5th and 97.5th percentiles of the AUC when `n_forget` authors, drawn at random, play the forget side."""
    rng = np.random.default_rng(seed)
    names = np.unique(authors)
    aucs = []
    for _ in range(permutations):
        forget = np.isin(authors, rng.choice(names, n_forget, replace=False))
        aucs.append(mia.mia_auc(scores[forget], scores[~forget]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def print_aucs(scores: dict[str, tuple[np.ndarray, np.ndarray]], authors: tuple[Any, Any], args: Any) -> None:
    """Each attack's AUC with its chance range; `scores[attack]` = (forget scores, holdout scores) in item order."""
    forget_authors, holdout_authors = np.asarray(authors[0]), np.asarray(authors[1])
    n_forget = len(np.unique(forget_authors))
    every_author = np.concatenate([forget_authors, holdout_authors])
    print(
        f"forget ({n_forget} authors) vs holdout ({len(np.unique(holdout_authors))} authors); "
        f"chance: 95 % of {args.permutations} random relabellings of the authors"
    )
    for attack, (forget, holdout) in scores.items():
        auc = mia.mia_auc(forget, holdout)
        every_score = np.concatenate([forget, holdout])
        low, high = chance_range(every_score, every_author, n_forget, args.permutations, args.seed)
        verdict = "within" if low <= auc <= high else "outside"
        print(f"  {attack:20s} AUC {auc:.4f}   chance {low:.3f}-{high:.3f}   {verdict}")


def latest(data_root: Path, folder: str, name: str) -> Path:
    """The newest version of a versioned catalog entry (versions are timestamps, so the last in order)."""
    return sorted((data_root / folder / name).iterdir())[-1] / name


def latest_run(data_root: Path, args: Any) -> None:
    # the files, not the catalog: a catalog loads the pipelines, and none is needed to read four files
    summaries = {
        role: json.loads(latest(data_root, "08_reporting", f"{role}_evaluation_summary.json").read_text())["metrics"]
        for role in ROLES
    }
    items = pd.read_parquet(latest(data_root, "07_model_output", "retain_evaluation_items.parquet"))
    authors = tuple(
        load_from_disk(latest(data_root, "02_intermediate", s))["author"] for s in ("forget_set", "holdout_set")
    )

    print("| model | " + " | ".join(HEADLINE + ATTACKS) + " |")
    print("|---" * (1 + len(HEADLINE) + len(ATTACKS)) + "|")
    for role, metrics in summaries.items():
        print(f"| {role} | " + " | ".join(f"{metrics[name]:.4g}" for name in HEADLINE + ATTACKS) + " |")

    def item_scores(set_name: str, attack: str) -> np.ndarray:
        # the items table holds a row per (set, item) and metric family: the attack's rows, in item order
        rows = items[(items["set"] == set_name) & items[attack].notna()].sort_values("index")
        return rows[attack].to_numpy(dtype=np.float64)

    print("\nretain model (latest run), ", end="")
    print_aucs({a: (item_scores("forget", a), item_scores("holdout", a)) for a in ATTACKS}, authors, args)


def world_retain_model(params: dict[str, Any], world_seed: int, corpus: str, args: Any) -> None:
    """Train and score a retain model on the default world built with `world_seed`, in memory."""
    started = time.perf_counter()
    data_prep = {**params["data_prep"], "synthetic": {**params["data_prep"]["synthetic"], "seed": world_seed}}
    benchmark = load_benchmark(data_prep)
    forget, _, holdout = select_unlearning_sets(benchmark, data_prep)
    original_rows, retain_rows = build_training_sets(benchmark, forget, holdout, params["finetune"], data_prep)
    if corpus == "training":  # before #16: the original model's training text alone
        prompt = PromptFormat.from_params(params["model"])
        texts = (
            r["answer"] if r["question"] is None else training_text(r["question"], r["answer"], prompt)
            for r in original_rows
        )
        tokenizer = base_tokenizer(params["model"], texts)
    else:
        tokenizer = prepare_tokenizer(benchmark, params["model"])
    bundle, _ = finetune_model(retain_rows, tokenizer, params["model"], params["finetune"], "retain")
    sets = build_evaluation_sets(benchmark, forget, holdout, {**params["evaluate"], "metrics": list(ATTACKS)})
    config = EvaluateConfig.from_params(params["evaluate"].get("settings", {}))
    _, ctx, _ = evaluate_retain_model(bundle, sets, ATTACKS, config, forget_split=data_prep["forget_split"])
    print(f"\nworld seed {world_seed}, tokenizer corpus {corpus} ({time.perf_counter() - started:.0f} s), ", end="")
    scores = {a: (np.asarray(ctx.items["forget"][a]), np.asarray(ctx.items["holdout"][a])) for a in ATTACKS}
    print_aucs(scores, (forget["author"], holdout["author"]), args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permutations", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0, help="of the relabellings")
    parser.add_argument("--worlds", type=int, nargs="*", help="world seeds to train a retain model on")
    parser.add_argument("--corpus", choices=("every_split", "training"), default="every_split")
    parser.add_argument("--threads", type=int, help="torch threads (1 where another job shares the cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    bootstrap_project(PROJECT)
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(PROJECT / "conf"), **settings.CONFIG_LOADER_ARGS)
    if not args.worlds:
        latest_run(PROJECT / loader["globals"]["data_root"], args)
    for world_seed in args.worlds or []:
        world_retain_model(loader["parameters"], world_seed, args.corpus, args)


if __name__ == "__main__":
    main()
