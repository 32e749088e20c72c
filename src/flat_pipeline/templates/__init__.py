"""Template answers for FLAT's good side (the paper's Step 1): where they come from and how items are paired.

Sources are registered by name in TEMPLATE_SOURCES: `idk` and `refusal` (written for this project, shipped as text
files beside this module), `file` (a user's file, one answer a line) and `generated` (sampled from a causal LM prompted
to refuse). Every forget item gets `candidates_per_item` candidates; `pick_template` decides which one a training
step uses: always the first (`fixed`) or a seeded draw per epoch (`resample`, TOFU's behaviour).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PAIRINGS = ("fixed", "resample")
DEFAULT_REFUSAL_INSTRUCTION = (
    "You do not know the answer to the question below. Reply with one short sentence that politely says so."
)
# Three refusals shown to a generating model before each forget question (`templates.generated.shots`): zero-shot, a
# small instruct model answers a question about a stranger by inventing facts about them; after these, it refuses in
# words of the question ("I'm not aware of which award ... won."). Written for this project; the people are made up.
DEFAULT_REFUSAL_SHOTS = (
    ("Where was Maren Okafor-Lind born?", "I'm not aware of where Maren Okafor-Lind was born."),
    ("Which award did Tomasz Veliko receive for his first novel?", "I don't know which award Tomasz Veliko received."),
    ("What genre does Ilse Varanek write in?", "I'm not familiar with Ilse Varanek, so I can't say what she writes."),
)
# Words too common to tell whether a template states anything of the forget answer (`states_answer`).
_COMMON_WORDS = frozenset(
    re.findall(
        r"\S+",
        "a an and are as at be been but by did do does for from had has have he her his i in is it its of on or she "
        "that the their them they this to was were which who whom whose with you your not no know don't can't",
    )
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


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9']+", text.lower()))


def _first_sentence(text: str) -> str:
    """The first line of a sample, cut after its first sentence: a sample stopped by max_new_tokens mid-sentence
    keeps its complete first sentence."""
    line = text.strip().split("\n")[0].strip()
    sentence = re.match(r"(.+?[.!?])(\s|$)", line)
    return sentence.group(1) if sentence else line


def states_answer(candidate: str, answer: str, question: str) -> bool:
    """Whether a template candidate states anything of the forget answer: a word of the answer that is neither in the
    question nor a common word ("born", "1961", "Lisbon"). A refusal that repeats the question's words passes."""
    facts = _words(answer) - _words(question) - _COMMON_WORDS
    return bool(facts & _words(candidate))


def refusal_prompt(
    question: str, tokenizer: Any, instruction: str, shots: Sequence[tuple[str, str]] = DEFAULT_REFUSAL_SHOTS
) -> str:
    """What a generating model reads before its refusal: in its own chat template where it has one (the instruction
    as the system turn, each shot as a user and an assistant turn), else in the project's plain prompt format."""
    from flat_pipeline.prompts import format_prompt

    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "system", "content": instruction}]
        for shot_question, shot_answer in shots:
            messages += [{"role": "user", "content": shot_question}, {"role": "assistant", "content": shot_answer}]
        messages.append({"role": "user", "content": question})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    examples = "".join(f"{format_prompt(q)}{a}\n" for q, a in shots)
    return f"{instruction}\n{examples}{format_prompt(question)}"


def generate_refusals(
    questions: Sequence[str],
    model: Any,
    tokenizer: Any,
    *,
    k: int,
    seed: int,
    answers: Sequence[str] | None = None,
    instruction: str = DEFAULT_REFUSAL_INSTRUCTION,
    shots: Sequence[tuple[str, str]] = DEFAULT_REFUSAL_SHOTS,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 0.95,
    batch_size: int = 16,
    max_rounds: int = 4,
) -> list[list[str]]:
    """`k` sampled refusals per question from a causal LM (the first sentence of each sample's first line, non-empty),
    prompted with `instruction` and the refusals in `shots` (`refusal_prompt`).

    With the forget `answers`, a sample that states anything of its question's answer (`states_answer`) is rejected;
    the share accepted is logged. Rejected or empty samples are drawn again, up to `max_rounds` times; an item with no
    accepted sample then is an error.
    """
    import torch
    from tqdm.auto import tqdm

    from flat_pipeline.generation import sample_per_prompt

    tokenizer.padding_side = "left"  # generation continues from the right edge of every prompt
    torch.manual_seed(seed)
    model.eval()
    results: list[list[str]] = [[] for _ in questions]
    sampled = accepted = 0
    for _ in range(max_rounds):
        todo = [i for i, got in enumerate(results) if len(got) < k]
        if not todo:
            break
        batches = range(0, len(todo), batch_size)
        # disable=None: a bar on a terminal only (in a log file each redraw would pile up)
        for start in tqdm(batches, desc="generating templates", disable=None, leave=False):
            batch = todo[start : start + batch_size]
            prompts = [refusal_prompt(questions[i], tokenizer, instruction, shots) for i in batch]
            # the chat template writes its own special tokens: the tokenizer adds none
            chat = bool(getattr(tokenizer, "chat_template", None))
            enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=not chat)
            out = sample_per_prompt(
                model,
                enc,
                k,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for j, i in enumerate(batch):
                for text in texts[j * k : (j + 1) * k]:
                    line = _first_sentence(text)
                    if not line:
                        continue
                    sampled += 1
                    if answers is not None and states_answer(line, answers[i], questions[i]):
                        continue
                    accepted += 1
                    if len(results[i]) < k:
                        results[i].append(line)
    if answers is not None:
        logger.info(
            "templates.generated: %d of %d samples accepted (%.0f%%); the others stated part of the forget answer",
            accepted, sampled, 100 * accepted / max(sampled, 1),
        )  # fmt: skip
    short = [i for i, got in enumerate(results) if not got]
    if short:
        raise RuntimeError(
            f"templates.generated: no usable answer for {len(short)} prompt(s) after {max_rounds} rounds (empty, or "
            f"stating the forget answer), e.g. {questions[short[0]]!r}; raise max_new_tokens, add shots or use "
            f"another model"
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
    name_or_path = settings.pop("model", None) or options.get("base_model")
    if not name_or_path:
        raise ValueError(
            "parameter templates.generated.model: null means the run's base model (dataset base_model), and none is "
            "saved yet: run the finetune pipeline first (it saves base_model), or name a hub id or local folder"
        )
    shots = settings.pop("shots", None)
    shots = DEFAULT_REFUSAL_SHOTS if shots is None else [(shot["question"], shot["answer"]) for shot in shots]
    answers = options.get("answers") if settings.pop("reject_stating_answer", True) else None
    bundle = load_causal_lm(name_or_path, **options.get("load", {}))
    return generate_refusals(
        questions, bundle.model, bundle.tokenizer, k=k, seed=seed, answers=answers, shots=shots, **settings
    )


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
    questions: Sequence[str],
    options: dict[str, Any],
    load: Mapping[str, Any] | None = None,
    answers: Sequence[str] | None = None,
    base_model: str | None = None,
) -> list[list[str]]:
    """Candidate template answers for every question, from the source named in `options["source"]`; `load` (dtype,
    attn_implementation) is how a `generated` source loads its model, `answers` (the forget answers) what its
    samples must not state, and `base_model` the folder it generates with when `generated.model` is null."""
    check_template_options(options)
    build = TEMPLATE_SOURCES[options["source"]]
    extra = {"load": load or {}, "answers": answers, "base_model": base_model}
    return build(questions, options["candidates_per_item"], int(options.get("seed", 0)), {**options, **extra})
