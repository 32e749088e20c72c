"""FLAT on the embedded default world: every divergence and score form on one budget, measured per epoch.

Loads the latest `original_model`, `forget_templates` and `benchmark_splits` from the catalog (run
`kedro run --pipelines data_prep,templates,finetune` first), unlearns the forget split with each variant, and prints
greedy ROUGE-L recall, exact match and the rate of template-like answers on the forget QA and on the retain QA
(`retain_perturbed`, the first 10 % of authors), after every epoch.

    .venv/bin/python benchmarks/unlearn_sweep.py [--epochs 4] [--lr 3e-4] [--batch-size 32] [--variants kl:logprob,...]
        [--final-only]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from flat_pipeline.generation import greedy_generate
from flat_pipeline.metrics.text import exact_match, rouge_l_recall, template_like
from flat_pipeline.prompts import encode_prompt
from flat_pipeline.training.unlearn import UnlearnConfig, unlearn

PROJECT = Path(__file__).resolve().parents[1]
ALL_VARIANTS = [f"{d}:{s}" for s in ("logprob", "prob") for d in ("kl", "js", "pearson", "tv")]


def evaluate(bundle, rows, templates):
    prompts = [encode_prompt(bundle.tokenizer, q) for q in rows["question"]]
    # The longest answer of the world is 24 tokens: 40 new tokens always reach eos or show a runaway answer.
    generated = greedy_generate(bundle.model, bundle.tokenizer, prompts, max_new_tokens=40, batch_size=100)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "rouge": mean(rouge_l_recall(generated, rows["answer"])),
        "em": mean(exact_match(generated, rows["answer"])),
        "tmpl": mean(template_like(generated, templates)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--pairing", default="resample")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS))
    parser.add_argument("--final-only", action="store_true", help="evaluate after the last epoch only")
    args = parser.parse_args()
    torch.set_num_threads(2)

    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        catalog = session.load_context().catalog
        forget_templates = catalog.load("forget_templates")
        benchmark = catalog.load("benchmark_splits")
        load_original = lambda: catalog.load("original_model")  # noqa: E731
    forget_rows, retain_rows = benchmark["forget10"], benchmark["retain_perturbed"]
    templates = [t for row in forget_templates["template_answers"] for t in row]

    original = load_original()
    base_f, base_r = evaluate(original, forget_rows, templates), evaluate(original, retain_rows, templates)
    print(
        f"lr {args.lr}, pairing {args.pairing}, batch {args.batch_size}, forget {len(forget_rows)} QA, "
        f"retain_perturbed {len(retain_rows)} QA"
    )
    print(
        "| variant | epoch | forget ROUGE-L | forget EM | forget template-like | retain ROUGE-L | retain EM | "
        "retain template-like | F/F0 | R/R0 | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| original | - | {base_f['rouge']:.3f} | {base_f['em']:.3f} | {base_f['tmpl']:.3f} | {base_r['rouge']:.3f} "
        f"| {base_r['em']:.3f} | {base_r['tmpl']:.3f} | 1.00 | 1.00 | - |"
    )
    for variant in args.variants.split(","):
        divergence, score = variant.split(":")
        bundle = load_original()
        started = time.perf_counter()
        config = UnlearnConfig(
            divergence=divergence,
            score=score,
            learning_rate=args.lr,
            num_train_epochs=args.epochs,
            pairing=args.pairing,
            per_device_train_batch_size=args.batch_size,
            logging_steps=100,
        )

        def report(epoch: int, divergence=divergence, score=score, bundle=bundle, started=started) -> None:
            if args.final_only and epoch < args.epochs:
                return
            seconds = time.perf_counter() - started
            f, r = evaluate(bundle, forget_rows, templates), evaluate(bundle, retain_rows, templates)
            bundle.model.train()
            print(
                f"| {divergence}/{score} | {epoch} | {f['rouge']:.3f} | {f['em']:.3f} | {f['tmpl']:.3f} | "
                f"{r['rouge']:.3f} | {r['em']:.3f} | {r['tmpl']:.3f} | {f['rouge'] / base_f['rouge']:.2f} | "
                f"{r['rouge'] / base_r['rouge']:.2f} | {seconds:.0f} |",
                flush=True,
            )

        unlearn(bundle, forget_templates, config, on_epoch_end=report)


if __name__ == "__main__":
    main()
