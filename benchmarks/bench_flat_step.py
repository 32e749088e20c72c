"""One FLAT training step (forward, backward, AdamW) of ours against a faithful re-implementation of the reference's.

The reference (UCSC-REAL/FLAT, flat.md §1.3) runs two forward passes, takes a full-vocabulary softmax at every
position of both padded batches, turns it into per-token probabilities with NLLLoss, averages them over all B·(L-1)
positions and applies the divergence to the two batch scalars. Ours computes the same `code_compat` loss from the
answer positions only: the LM head runs from the first answer column on, and a label's probability comes from a gather
and a logsumexp, never a stored softmax.

Model: a Llama with Llama-2's 32,000-token vocabulary, hidden 256, 2 layers (CPU-sized). Batch: 8 sequences of a
128-token prompt and a 64-token answer, on both sides. Each variant runs in its own process; peak memory is the rise
of the process's peak RSS over its RSS before the first step.

    .venv/bin/python benchmarks/bench_flat_step.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

VOCAB, HIDDEN, LAYERS, HEADS = 32_000, 256, 2, 4
BATCH, PROMPT, ANSWER = 8, 128, 64


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def _setup(seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=512,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    batch = {}
    for side in ("template", "forget"):
        ids = torch.randint(4, VOCAB, (BATCH, PROMPT + ANSWER))
        labels = ids.clone()
        labels[:, :PROMPT] = -100
        batch.update(
            {f"{side}_input_ids": ids, f"{side}_attention_mask": torch.ones_like(ids), f"{side}_labels": labels}
        )
    return model, batch


def reference_loss(model, batch, divergence: str = "kl"):
    """The reference code's computation, restated: full softmax probabilities at every position of both batches."""
    import torch

    from flat_pipeline.losses import DIVERGENCES

    scores = {}
    for side in ("template", "forget"):
        logits = model(input_ids=batch[f"{side}_input_ids"], attention_mask=batch[f"{side}_attention_mask"]).logits
        probs = torch.softmax(logits[:, :-1].float(), dim=-1)
        labels = batch[f"{side}_labels"][:, 1:]
        neg_p = torch.nn.functional.nll_loss(probs.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        scores[side] = -neg_p.mean()  # masked positions are 0 and still counted: B·(L-1) in the denominator
    div = DIVERGENCES[divergence]
    return -div.activation(scores["template"]) + div.conjugate(div.activation(scores["forget"]))


def our_loss(model, batch, divergence: str = "kl"):
    from flat_pipeline.training.methods import flat_step
    from flat_pipeline.training.unlearn import UnlearnConfig

    return flat_step(model, batch, None, UnlearnConfig(divergence=divergence, score="prob", code_compat=True))[0]


def run_variant(name: str, steps: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, batch = _setup()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = our_loss if name == "ours" else reference_loss
    baseline = _rss_kib()
    times, losses = [], []
    for _ in range(steps + 1):  # the first step warms up (and allocates AdamW's state)
        started = time.perf_counter()
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
        losses.append(loss.item())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": statistics.median(times[1:]), "peak_mib": (peak - baseline) / 1024, "first_loss": losses[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.steps, args.threads)))
        return

    import torch

    model, batch = _setup()
    with torch.no_grad():
        ours, reference = our_loss(model, batch).item(), reference_loss(model, batch).item()
    print(
        f"model: Llama vocab {VOCAB}, hidden {HIDDEN}, {LAYERS} layers; batch {BATCH} x ({PROMPT} prompt + "
        f"{ANSWER} answer) tokens per side; torch {torch.__version__}, {args.threads} threads, median of {args.steps}"
    )
    print(f"loss: ours {ours:.8f}  reference {reference:.8f}  |diff| {abs(ours - reference):.2e}")
    results = {}
    for name in ("reference", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", name, "--steps", str(args.steps), "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        step_ms, peak = results[name]["seconds"] * 1000, results[name]["peak_mib"]
        print(f"{name:9s}: {step_ms:8.1f} ms/step, peak memory +{peak:.0f} MiB")
    assert abs(ours - reference) < 1e-5, "the two formulations must give the same loss"
    print(f"speedup: {results['reference']['seconds'] / results['ours']['seconds']:.2f}")
    print(f"memory_ratio: {results['ours']['peak_mib'] / results['reference']['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
