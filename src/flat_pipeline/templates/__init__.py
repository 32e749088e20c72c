"""Template answers for FLAT's good side (the paper's Step 1): where they come from and how items are paired.

Sources are registered by name in TEMPLATE_SOURCES: `idk` and `refusal` (written for this project, shipped as text
files beside this module), `file` (a user's file, one answer a line) and `generated` (sampled from a causal LM prompted
to refuse). Every forget item gets `candidates_per_item` candidates; `pick_template` decides which one a training
step uses: always the first (`fixed`) or a seeded draw per epoch (`resample`, TOFU's behaviour).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

PAIRINGS = ("fixed", "resample")
DEFAULT_REFUSAL_INSTRUCTION = (
    "You do not know the answer to the question below. Reply with one short sentence that politely says so."
)


def builtin_templates(name: str) -> list[str]:
    """The project's own template pool `name` ("idk" or "refusal"), one answer a line."""
    text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_template_file(path: str | Path) -> list[str]:
    """A user's template file: one answer a line; a line holding a JSON string or {"text": ...} is decoded."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"parameter templates.file: template file '{file}' does not exist")
    answers = []
    for raw in file.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith(('"', "{")):
            try:
                decoded = json.loads(line)
            except json.JSONDecodeError:
                decoded = line
            line = decoded.get("text", "") if isinstance(decoded, dict) else str(decoded)
        if line.strip():
            answers.append(line.strip())
    if not answers:
        raise ValueError(f"parameter templates.file: template file '{file}' holds no answers")
    return answers


def draw_from_pool(pool: Sequence[str], n_items: int, k: int, seed: int) -> list[list[str]]:
    """`k` distinct candidates per item drawn from `pool`, seeded per item so items do not depend on each other."""
    if not pool:
        raise ValueError("template pool is empty")
    k = min(k, len(pool))
    return [random.Random(f"{seed}-template-{i}").sample(list(pool), k) for i in range(n_items)]


def pick_template(candidates: Sequence[str], index: int, epoch: int, seed: int, pairing: str) -> str:
    """The template answer that item `index` trains on in `epoch`."""
    if pairing == "fixed":
        return candidates[0]
    if pairing == "resample":
        return candidates[random.Random(f"{seed}-pick-{index}-{epoch}").randrange(len(candidates))]
    raise ValueError(f"parameter templates.pairing: expected one of {PAIRINGS}, got '{pairing}'")


def generate_refusals(
    questions: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    k: int,
    seed: int,
    instruction: str = DEFAULT_REFUSAL_INSTRUCTION,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 0.95,
    batch_size: int = 16,
    max_rounds: int = 4,
) -> list[list[str]]:
    """`k` sampled refusals per question from a causal LM (first line of each sample, stripped, non-empty).

    Samples that decode to nothing are drawn again, up to `max_rounds` times; an item still short then is an error.
    """
    import torch
    from tqdm.auto import tqdm

    from flat_pipeline.prompts import format_prompt

    tokenizer.padding_side = "left"  # generation continues from the right edge of every prompt
    torch.manual_seed(seed)
    model.eval()
    results: list[list[str]] = [[] for _ in questions]
    for _ in range(max_rounds):
        todo = [i for i, got in enumerate(results) if len(got) < k]
        if not todo:
            break
        batches = range(0, len(todo), batch_size)
        # disable=None: a bar on a terminal only (in a log file each redraw would pile up)
        for start in tqdm(batches, desc="generating templates", disable=None, leave=False):
            batch = todo[start : start + batch_size]
            prompts = [format_prompt(questions[i], instruction=instruction) for i in batch]
            enc = tokenizer(prompts, return_tensors="pt", padding=True)
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=temperature,
                    top_p=top_p,
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=k,
                    pad_token_id=tokenizer.pad_token_id,
                )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, i in enumerate(batch):
                for text in texts[j * k : (j + 1) * k]:
                    line = text.strip().split("\n")[0].strip()
                    if line and len(results[i]) < k:
                        results[i].append(line)
    short = [i for i, got in enumerate(results) if not got]
    if short:
        raise RuntimeError(
            f"templates.generated: the model produced only empty answers for {len(short)} prompt(s), "
            f"e.g. {questions[short[0]]!r}; raise max_new_tokens or use another model"
        )
    return results


# ------------------------------------------------------------------------------------------ registry
# A source turns the forget questions into candidate lists; `options` are the `templates` parameters.


def _pool_source(name: str):
    def build(questions: Sequence[str], k: int, seed: int, options: dict[str, Any]) -> list[list[str]]:
        return draw_from_pool(builtin_templates(name), len(questions), k, seed)

    return build


def _file_source(questions: Sequence[str], k: int, seed: int, options: dict[str, Any]) -> list[list[str]]:
    return draw_from_pool(read_template_file(options.get("file") or ""), len(questions), k, seed)


def _generated_source(questions: Sequence[str], k: int, seed: int, options: dict[str, Any]) -> list[list[str]]:
    from flat_pipeline.models.loading import load_causal_lm

    settings = dict(options.get("generated") or {})
    name_or_path = settings.pop("model", None)
    if not name_or_path:
        raise ValueError("parameter templates.generated.model: source 'generated' needs a hub id or local folder")
    bundle = load_causal_lm(name_or_path, **options.get("load", {}))
    return generate_refusals(questions, bundle.model, bundle.tokenizer, k=k, seed=seed, **settings)


TEMPLATE_SOURCES = {
    "idk": _pool_source("idk"),
    "refusal": _pool_source("refusal"),
    "file": _file_source,
    "generated": _generated_source,
}


def check_template_options(options: dict[str, Any], check_file: bool = True) -> None:
    """Fail fast on a bad `templates` parameter block, before any model is loaded. `check_file=False` leaves out
    whether `templates.file` exists: a data input, checked only by runs that make templates."""
    if options.get("source") not in TEMPLATE_SOURCES:
        raise ValueError(
            f"parameter templates.source: expected one of {sorted(TEMPLATE_SOURCES)}, got {options.get('source')!r}"
        )
    if options.get("pairing") not in PAIRINGS:
        raise ValueError(f"parameter templates.pairing: expected one of {PAIRINGS}, got {options.get('pairing')!r}")
    k = options.get("candidates_per_item")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"parameter templates.candidates_per_item: expected an integer >= 1, got {k!r}")
    if check_file and options["source"] == "file" and not Path(options.get("file") or "").is_file():
        raise FileNotFoundError(f"parameter templates.file: template file {options.get('file')!r} does not exist")


def build_template_candidates(
    questions: Sequence[str], options: dict[str, Any], load: Mapping[str, Any] | None = None
) -> list[list[str]]:
    """Candidate template answers for every question, from the source named in `options["source"]`; `load` (dtype,
    attn_implementation) is how a `generated` source loads its model."""
    check_template_options(options)
    build = TEMPLATE_SOURCES[options["source"]]
    return build(
        questions, options["candidates_per_item"], int(options.get("seed", 0)), {**options, "load": load or {}}
    )
