"""One FLAT training step (forward, backward, AdamW) of ours against a faithful re-implementation of the reference's.

The reference (UCSC-REAL/FLAT, flat.md §1.3) runs two forward passes, takes a full-vocabulary softmax at every
position of both padded batches, turns it into per-token probabilities with NLLLoss, averages them over all B·(L-1)
positions and applies the divergence to the two batch scalars. Ours computes the same `code_compat` loss from the
answer positions only: the LM head runs from the first answer column on, and a label's probability comes from a gather
and a logsumexp, never a stored softmax.

Models (`--model`, random init):
- `small` (default, CPU-sized): Llama-2's 32,000-token vocabulary, hidden 256, 2 layers;
- `llama-3.2-1b`: Llama-3.2-1B's shape (128,256-token vocabulary, hidden 2048, 16 layers, 32 heads / 8 KV heads).
Batch: 8 sequences of a 128-token prompt and a 64-token answer, on both sides. Each variant runs in its own process.
Peak memory: on CPU the rise of the process's peak RSS over its RSS before the first step; on CUDA the peak of
allocated device memory. On CUDA the last lines add each variant's MFU: the step's model FLOPs (6 x parameters x
tokens, both sides) per second over the GPU's dense peak for the dtype.

    .venv/bin/python benchmarks/bench_flat_step.py [--steps 5] [--threads 2]
    .venv/bin/python benchmarks/bench_flat_step.py --model llama-3.2-1b --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

MODELS = {
    "small": {"vocab_size": 32_000, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 4, "tie_word_embeddings": False},
    "llama-3.2-1b": {"vocab_size": 128_256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "tie_word_embeddings": True},
}  # fmt: skip
BATCH, PROMPT, ANSWER = 8, 128, 64
# Dense peak FLOPS per device (vendor data sheets), by dtype: for MFU.
PEAK_FLOPS = {"H100": {"bfloat16": 989e12, "float32": 67e12}, "H200": {"bfloat16": 989e12, "float32": 67e12}}


def _rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def _setup(model_name: str, device: str, dtype: str, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(**MODELS[model_name], max_position_embeddings=512)
    model = LlamaForCausalLM(config).to(device=device, dtype=getattr(torch, dtype))
    vocab = config.vocab_size
    batch = {}
    for side in ("template", "forget"):
        ids = torch.randint(4, vocab, (BATCH, PROMPT + ANSWER))
        labels = ids.clone()
        labels[:, :PROMPT] = -100
        batch.update(
            {f"{side}_input_ids": ids, f"{side}_attention_mask": torch.ones_like(ids), f"{side}_labels": labels}
        )
    return model, {key: value.to(device) for key, value in batch.items()}


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


def run_variant(name: str, args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    model, batch = _setup(args.model, args.device, args.dtype)
    cuda = args.device == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    loss_fn = our_loss if name == "ours" else reference_loss
    baseline = _rss_kib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        baseline_bytes = torch.cuda.memory_allocated()
    times = []
    for _ in range(args.steps + 1):  # the first step warms up (and allocates AdamW's state)
        started = time.perf_counter()
        loss = loss_fn(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if cuda:
        peak_mib = (torch.cuda.max_memory_allocated() - baseline_bytes) / 2**20
    else:
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline) / 1024
    n_params = sum(p.numel() for p in model.parameters())
    return {"seconds": statistics.median(times[1:]), "peak_mib": peak_mib, "params": n_params}


def _peak_flops(dtype: str) -> float | None:
    import torch

    name = torch.cuda.get_device_name()
    return next((peaks.get(dtype) for gpu, peaks in PEAK_FLOPS.items() if gpu in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model", choices=sorted(MODELS), default="small")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return

    import torch

    model, batch = _setup(args.model, args.device, args.dtype)
    with torch.no_grad():
        ours, reference = our_loss(model, batch).item(), reference_loss(model, batch).item()
    del model
    shape = MODELS[args.model]
    print(
        f"model: {args.model} (vocab {shape['vocab_size']}, hidden {shape['hidden_size']}, "
        f"{shape['num_hidden_layers']} layers), {args.dtype} on {args.device}; batch {BATCH} x ({PROMPT} prompt + "
        f"{ANSWER} answer) tokens per side; torch {torch.__version__}, {args.threads} threads, median of {args.steps}"
    )
    print(f"loss: ours {ours:.8f}  reference {reference:.8f}  |diff| {abs(ours - reference):.2e}")
    results = {}
    forwarded = ["--steps", str(args.steps), "--threads", str(args.threads), "--model", args.model,
                 "--device", args.device, "--dtype", args.dtype]  # fmt: skip
    for name in ("reference", "ours"):
        out = subprocess.run(
            [sys.executable, __file__, "--variant", name, *forwarded], capture_output=True, text=True, check=True
        )
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
        step_ms, peak = results[name]["seconds"] * 1000, results[name]["peak_mib"]
        print(f"{name:9s}: {step_ms:8.1f} ms/step, peak memory +{peak:.0f} MiB")
    if args.device == "cuda":
        tokens = 2 * BATCH * (PROMPT + ANSWER)
        flops = 6 * results["ours"]["params"] * tokens
        peak = _peak_flops(args.dtype)
        for name in ("reference", "ours"):
            achieved = flops / results[name]["seconds"]
            mfu = f"{achieved / peak:.3f}" if peak else f"n/a (no peak known for {torch.cuda.get_device_name()})"
            print(f"{name:9s}: {achieved / 1e12:.1f} TFLOPS, MFU {mfu}")
    # float32 agrees to rounding; bfloat16 sums its softmax in float32 but the logits carry bf16 error
    tolerance = 1e-5 if args.dtype == "float32" else 2e-2 * max(abs(reference), 1.0)
    assert abs(ours - reference) < tolerance, "the two formulations must give the same loss"
    print(f"speedup: {results['reference']['seconds'] / results['ours']['seconds']:.2f}")
    print(f"memory_ratio: {results['ours']['peak_mib'] / results['reference']['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
