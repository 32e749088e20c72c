"""The TOFU suite of the evaluate pipeline against a straightforward per-item scorer, on the same model and data.

Ours (`flat_pipeline.evaluation`): each question's prompt runs once and its key/value cache serves all its candidate
answers (answer, paraphrase, perturbed answers), many questions per batch; greedy answers are generated in
left-padded batches. The straightforward scorer runs every (question, candidate) sequence alone with a
full-vocabulary softmax at every position, and generates every answer alone. Both feed the same metric functions,
so the numbers must agree (to 1e-5); the last line is the speedup of the whole suite.

Model and data: the latest `original_model` and the world of a Kedro environment from its catalog (run `kedro run`
first; `--env smollm2` for SmolLM2-135M-Instruct in its chat template), the retain model's pinned reference for
forget_quality / privleak. `--per-set N` evaluates the first N items of each set (both scorers the same ones).

    .venv/bin/python benchmarks/bench_eval.py [--threads 2] [--env smollm2] [--per-set 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from flat_pipeline.evaluation import EvaluateConfig, RetainReference, evaluate_model
from flat_pipeline.metrics import mia, tofu
from flat_pipeline.metrics.text import rouge_l_recall
from flat_pipeline.pipelines.evaluate.nodes import build_evaluation_sets
from flat_pipeline.prompts import PromptFormat, encode_example, encode_prompt

PROJECT = Path(__file__).resolve().parents[1]
QA_ROLES = ("forget", "retain", "ra", "wf", "holdout")  # the sets the TOFU suite reads
SUITE = [
    "forget_quality",
    "model_utility",
    "forget_truth_ratio",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    *tofu.MODEL_UTILITY_KEYS,
    "extraction_strength",
    "exact_memorization",
    "mia_min_k",
    "privleak",
]


@torch.no_grad()
def score_alone(model, tokenizer, question: str, answer: str, prompt: PromptFormat) -> tuple[list[float], list[bool]]:
    """One sequence, one forward pass, softmax over the whole vocabulary at every position."""
    encoded = encode_example(tokenizer, answer, question, prompt)
    logits = model(input_ids=torch.tensor([encoded.input_ids])).logits[0]
    probs = torch.softmax(logits.float(), dim=-1)
    start = encoded.prompt_length
    gold = torch.tensor(encoded.input_ids[start:])
    predicted = probs[start - 1 : -1]
    return predicted.gather(1, gold[:, None])[:, 0].log().tolist(), (predicted.argmax(-1) == gold).tolist()


@torch.no_grad()
def generate_alone(model, tokenizer, question: str, max_new_tokens: int, prompt_format: PromptFormat) -> str:
    prompt = torch.tensor([encode_prompt(tokenizer, question, prompt_format)])
    out = model.generate(
        input_ids=prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )[0, prompt.shape[1] :].tolist()
    if tokenizer.eos_token_id in out:
        out = out[: out.index(tokenizer.eos_token_id)]
    return tokenizer.decode(out, skip_special_tokens=True).strip()


def per_item_suite(
    bundle, sets, reference: RetainReference, config: EvaluateConfig, prompt: PromptFormat
) -> dict[str, float]:
    """The same suite, item by item."""
    model, tokenizer = bundle.model, bundle.tokenizer

    def score(question: str, answer: str) -> tuple[list[float], list[bool]]:
        return score_alone(model, tokenizer, question, answer, prompt)

    model.eval()
    values: dict[str, float] = {}
    per_set = {}
    for name in ("forget", "retain", "ra", "wf"):
        rows = sets[name]
        answers, correct, perturbed, rouge = [], [], [], []
        for row in rows:
            answers.append(score(row["question"], row["answer"]))
            right = row.get("paraphrased_answer") or row["answer"]
            correct.append(score(row["question"], right)[0])
            perturbed.append([score(row["question"], p)[0] for p in row["perturbed_answer"]])
            generated = generate_alone(model, tokenizer, row["question"], config.max_new_tokens, prompt)
            rouge.append(rouge_l_recall([generated], [row["answer"]])[0])
        per_set[name] = (answers, correct, perturbed, rouge)
    for name, (answers, correct, perturbed, rouge) in per_set.items():
        prefix = {"forget": "forget", "retain": "retain", "ra": "ra", "wf": "wf"}[name]
        ratios = tofu.truth_ratios(correct, perturbed)
        if name in ("forget", "retain"):
            values[f"{prefix}_Q_A_Prob"] = float(np.mean([tofu.answer_prob(lp) for lp, _ in answers]))
        else:
            values[f"{prefix}_Q_A_Prob_normalised"] = tofu.prob_normalised(correct, perturbed)
        values[f"{prefix}_Q_A_ROUGE"] = float(np.mean(rouge))
        tr_name = "forget_truth_ratio" if name == "forget" else f"{prefix}_Truth_Ratio"
        values[tr_name] = (
            tofu.truth_ratio_closer_to_1(ratios) if name == "forget" else tofu.truth_ratio_true_better(ratios)
        )
        if name == "forget":
            values["forget_quality"] = tofu.forget_quality(ratios, reference.forget_truth_ratio)
            values["extraction_strength"] = float(np.mean([tofu.extraction_strength(h) for _, h in answers]))
            values["exact_memorization"] = float(np.mean([tofu.exact_memorization(h) for _, h in answers]))
    values["model_utility"] = tofu.model_utility({k: values[k] for k in tofu.MODEL_UTILITY_KEYS})
    forget_scores = [mia.min_k_score(lp, config.mia_k) for lp, _ in per_set["forget"][0]]
    holdout_scores = [mia.min_k_score(score(r["question"], r["answer"])[0], config.mia_k) for r in sets["holdout"]]
    values["mia_min_k"] = mia.mia_auc(forget_scores, holdout_scores)
    values["privleak"] = mia.privleak(values["mia_min_k"], reference.mia_min_k)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--env", default=None, help="Kedro environment (default: base + local)")
    parser.add_argument("--per-set", type=int, default=None, help="evaluate the first N items of each set")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT, env=args.env) as session:
        context = session.load_context()
        catalog, params = context.catalog, context.params
        sets = build_evaluation_sets(
            catalog.load("benchmark_splits"),
            catalog.load("forget_set"),
            catalog.load("holdout_set"),
            {**params["evaluate"], "metrics": SUITE},
        )
        bundle = catalog.load("original_model")
        reference = RetainReference(**catalog.load("retain_reference"))
    if args.per_set:
        sets = {k: v.select(range(min(args.per_set, len(v)))) if k in QA_ROLES else v for k, v in sets.items()}
    config = EvaluateConfig.from_params(params["evaluate"]["settings"])
    prompt = PromptFormat.from_params(params["model"])
    print(f"env: {args.env or 'base'}; model: {bundle.source}; sets: "
          f"{ {k: len(v) for k, v in sets.items() if k in QA_ROLES} }")  # fmt: skip
    print(f"threads: {args.threads}; max_new_tokens: {config.max_new_tokens}; prompt: {prompt.format}; scoring batch: "
          f"{config.scoring_batch_size}; generation batch: {config.generation_batch_size}")  # fmt: skip

    started = time.perf_counter()
    ours, _ = evaluate_model(bundle, sets, SUITE, config, prompt=prompt, reference=reference)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    theirs = per_item_suite(bundle, sets, reference, config, prompt)
    per_item_seconds = time.perf_counter() - started

    worst = 0.0
    print("\n| metric | ours | per-item | abs diff |\n|---|---|---|---|")
    for name in SUITE:
        diff = abs(ours[name] - theirs[name])
        worst = max(worst, diff)
        print(f"| {name} | {ours[name]:.8g} | {theirs[name]:.8g} | {diff:.1e} |")
    print(f"\nours: {ours_seconds:.1f} s; per-item: {per_item_seconds:.1f} s; largest difference {worst:.1e}")
    if worst > 1e-5:
        raise SystemExit(f"the two scorers disagree by {worst:.1e} > 1e-5")
    print(f"speedup: {per_item_seconds / ours_seconds:.2f}")


if __name__ == "__main__":
    main()
