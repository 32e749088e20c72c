"""Evaluate one model: every metric is registered by name in `METRICS` and computed from a shared `EvalContext`.

The context scores and generates lazily and once: `forget_Q_A_Prob`, `forget_truth_ratio` and `forget_quality` all
read the same teacher-forced scores of the forget set's candidate answers, which `score_candidates` computes with
each question's prompt run once. Metric names follow open-unlearning's (`forget_quality`, `model_utility`,
`forget_Q_A_ROUGE`, ...) so our numbers read against its tables; definitions in spec/benchmarks-and-metrics.md
§1.4 and §8.

Evaluation sets (`EvalSets`, built by `evaluation_sets` from the roles in `evaluate.sets`):
- `forget`, `holdout`: QA rows (`question`, `answer`, and where a metric needs them `paraphrased_answer` and
  `perturbed_answer`, a list), or raw texts (`text`: MUSE's privleak splits), whose true answers or texts the
  membership attacks and extraction metrics score;
- `retain`, `ra` (real authors), `wf` (world facts): QA rows as above;
- `forget_completion`: `prompt` and `reference` rows (the start of a forget text and its true continuation: HP's
  hp_test_qa_200, MUSE's verbmem forget, the synthetic forget authors' passages cut after some words);
- `holdout_text`: texts never trained on, for perplexity;
- `forget_knowmem`, `retain_knowmem` and their `_shots`: QA rows for MUSE's in-context KnowMem.

Adding a metric is one function of the context plus one `METRICS` entry naming the sets it needs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from datasets import Dataset

from flat_pipeline.config import config_from_params
from flat_pipeline.data.text_chunks import split_passage
from flat_pipeline.generation import greedy_generate
from flat_pipeline.metrics import completion, mia, tofu
from flat_pipeline.metrics.text import exact_match, rouge_l_recall, template_like
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import encode_example, encode_prompt
from flat_pipeline.scoring import CandidateScore, score_answers, score_candidates

logger = logging.getLogger(__name__)

ANSWER_ONLY_SETS = {"holdout"}  # membership-inference negatives: only their true answers are scored


@dataclass
class EvaluateConfig:
    """Settings of an evaluation (`evaluate.settings` in parameters_evaluate.yml)."""

    max_new_tokens: int = 200  # greedy answers for Q_A_ROUGE, as open-unlearning
    scoring_batch_size: int = 32  # questions per forward pass (each with all its candidate answers)
    generation_batch_size: int = 64
    mia_k: float = 0.4  # Min-K% and Min-K%++ keep the lowest 40 % of token scores
    template_threshold: float = 0.5  # ROUGE-L F1 to the nearest template that makes an answer "template-like"
    completion_prompt_words: int = 30  # words of a text split given as the prompt (HP and MUSE bring their own cut)
    completion_prompt_template: str = "{prompt}"  # HP: "### Question: {prompt}\n" (FLAT's evaluate.py)
    completion_max_new_tokens: int = 128  # MUSE VerbMem: 128
    reference_quirks: bool = False  # FLAT's HP evaluation quirks (spec flat.md B13) for the copyright metrics
    knowmem_shots: int = 3  # in-context QA pairs before each KnowMem question
    knowmem_items: int | None = 100  # questions per KnowMem set (None: all)
    knowmem_max_new_tokens: int = 32
    max_items: int | None = None  # cap every QA set (None: all), e.g. TOFU's original 300
    max_length: int = 2048  # tokens of a scored text (MUSE's privleak articles), as MUSE's training length

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> EvaluateConfig:
        return config_from_params(cls, params, "evaluate.settings")


@dataclass
class RetainReference:
    """The retain model's numbers that forget_quality and privleak compare against, and where they came from."""

    forget_split: str
    retain_model: str
    tokenizer: str | None  # None: from a reference log, which does not say (the check is skipped)
    forget_truth_ratio: list[float]  # empty where no forget_quality was asked for (MUSE, HP)
    mia_min_k: float | None  # None: privleak falls back to 0.5, as the reference does
    completion: dict[str, float] = field(default_factory=dict)  # copyright BLEU / ROUGE, for forget_quality_gap

    def check(self, forget_split: str, tokenizer: str, n_forget: int) -> None:
        """Raise if these numbers were computed for another forget split, tokenizer or forget set size."""
        problems = []
        if self.forget_split != forget_split:
            problems.append(f"forget split '{self.forget_split}', this evaluation uses '{forget_split}'")
        if self.tokenizer is not None and self.tokenizer != tokenizer:
            problems.append(f"tokenizer {self.tokenizer}, this model's is {tokenizer}")
        if self.forget_truth_ratio and len(self.forget_truth_ratio) != n_forget:
            problems.append(f"{len(self.forget_truth_ratio)} forget items, this evaluation has {n_forget}")
        if problems:
            raise ValueError(
                f"retain_reference (from {self.retain_model}) does not match this evaluation: "
                + "; ".join(problems)
                + ". Evaluate the retain model of the same split and tokenizer first."
            )

    def check_holds(self, metric_names: Sequence[str]) -> None:
        """Raise if a requested metric needs a number this reference does not hold (the retain model was evaluated
        without that metric). A reference log without a Min-K% AUC is allowed: privleak then uses 0.5, as
        open-unlearning does."""
        lacking = {
            "forget_quality": not self.forget_truth_ratio,
            "privleak": self.mia_min_k is None and self.tokenizer is not None,
            "forget_quality_gap": not self.completion,
        }
        missing = [name for name in metric_names if lacking.get(name)]
        if missing:
            raise ValueError(
                f"retain_reference (from {self.retain_model}) holds no numbers for {missing}: evaluate the retain "
                f"model with them in evaluate.metrics first (kedro run --pipelines evaluate)"
            )


def reference_from_open_unlearning(
    logs: Mapping[str, Any], forget_split: str, n_forget: int, origin: str
) -> RetainReference:
    """A retain reference from open-unlearning's evaluation log of a retain model (`TOFU_EVAL.json`): per-item
    forget truth ratios under `forget_truth_ratio.value_by_index`, and `mia_min_k.agg_value` where present.

    Raises:
        ValueError: the log lacks the truth ratios, or holds another number of forget items than the split.
    """
    by_index = logs.get("forget_truth_ratio", {}).get("value_by_index")
    if not isinstance(by_index, Mapping) or not by_index:
        raise ValueError(f"{origin}: no forget_truth_ratio.value_by_index; expected open-unlearning's TOFU_EVAL.json")
    if len(by_index) != n_forget:
        raise ValueError(
            f"{origin}: {len(by_index)} forget truth ratios, but the forget split '{forget_split}' has {n_forget} "
            f"items: the log belongs to another split"
        )

    def value(entry: Any) -> float:
        return float(entry["score"] if isinstance(entry, Mapping) else entry)

    ratios = [value(by_index[key]) for key in sorted(by_index, key=int)]
    auc = logs.get("mia_min_k", {}).get("agg_value")
    return RetainReference(forget_split, f"open-unlearning log {origin}", None, ratios, None if auc is None else auc)


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the vocabulary and special tokens: two models share it only if they tokenise alike."""
    payload = json.dumps(
        [sorted(tokenizer.get_vocab().items()), tokenizer.bos_token, tokenizer.eos_token], ensure_ascii=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


EvalSets = dict[str, Dataset]
# The roles `evaluate.sets` may name a benchmark split for (see `evaluation_sets`).
SET_ROLES = (
    *("forget", "holdout", "retain", "ra", "wf", "completion", "perplexity"),
    *("forget_knowmem", "retain_knowmem", "forget_knowmem_shots", "retain_knowmem_shots"),
)


def _rows_of(split: Dataset, owners: Dataset | None) -> Dataset | None:
    """The rows of a split with an `author` field whose author owns an item of `owners`; all rows of a split without
    one. None where the split names authors but `owners` does not: which rows are whose cannot be told."""
    if "author" not in split.column_names:
        return split
    if owners is None or "author" not in owners.column_names:
        return None
    authors = set(owners["author"])
    return split.filter(lambda row: row["author"] in authors)


def completion_rows(split: Dataset, prompt_words: int) -> Dataset:
    """`prompt` and `reference` rows: HP's prompt/response and MUSE's prompt/gt as given, texts cut after
    `prompt_words` words."""
    for prompt, reference in (("prompt", "response"), ("prompt", "gt")):
        if {prompt, reference} <= set(split.column_names):
            return Dataset.from_dict({"prompt": split[prompt], "reference": split[reference]})
    if "text" in split.column_names:
        pairs = [split_passage(text, prompt_words) for text in split["text"]]
        return Dataset.from_dict({"prompt": [p for p, _ in pairs], "reference": [r for _, r in pairs]})
    raise ValueError(
        f"evaluation set 'completion' has fields {split.column_names}: expected prompt/response, prompt/gt or text"
    )


def evaluation_sets(
    benchmark: Mapping[str, Dataset],
    roles: Mapping[str, str | None],
    forget: Dataset,
    holdout: Dataset | None,
    completion_prompt_words: int,
) -> EvalSets:
    """The evaluation sets by role (see the module docstring) from the benchmark splits `roles` names.

    `forget` and `holdout` default to data_prep's sets, `forget_knowmem` / `retain_knowmem` to the forget / retain
    sets; the completion set keeps the forget authors' texts and the perplexity set the holdout authors', where rows
    name an author. A role set to null or left out is absent, and so are empty sets.
    """
    unknown = sorted(set(roles) - set(SET_ROLES))
    if unknown:
        raise ValueError(f"parameter evaluate.sets: unknown role(s) {unknown}; expected some of {list(SET_ROLES)}")
    missing = [split for split in roles.values() if split is not None and split not in benchmark]
    if missing:
        raise ValueError(
            f"parameter evaluate.sets: split(s) {missing} not in the benchmark; available: {sorted(benchmark)}"
        )

    def split(role: str) -> Dataset | None:
        return benchmark[roles[role]] if roles.get(role) else None

    sets: dict[str, Dataset | None] = {
        "forget": split("forget") or forget,
        "holdout": split("holdout") or holdout,
        **{role: split(role) for role in ("retain", "ra", "wf", "forget_knowmem_shots", "retain_knowmem_shots")},
    }
    sets["forget_knowmem"] = split("forget_knowmem") or sets["forget"]
    sets["retain_knowmem"] = split("retain_knowmem") or sets["retain"]
    if roles.get("completion"):
        chosen = _rows_of(split("completion"), forget)
        sets["forget_completion"] = None if chosen is None else completion_rows(chosen, completion_prompt_words)
    if roles.get("perplexity"):
        sets["holdout_text"] = _rows_of(split("perplexity"), holdout)
    return {name: rows for name, rows in sets.items() if rows is not None and len(rows)}


@dataclass
class EvalContext:
    """One model on one collection of sets; computes scores and generations on first use and keeps them."""

    bundle: ModelBundle
    sets: EvalSets
    config: EvaluateConfig = field(default_factory=EvaluateConfig)
    prompt_format: str = "plain"
    templates: Sequence[str] = ()
    reference: RetainReference | None = None
    items: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    _cache: dict[Any, Any] = field(default_factory=dict)

    def _cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def record(self, set_name: str, column: str, values: Sequence[Any]) -> None:
        """Keep per-item values for the per-item results table."""
        self.items.setdefault(set_name, {})[column] = list(values)

    def rows(self, set_name: str) -> Dataset:
        rows = self.sets[set_name]
        limit = self.config.max_items
        return rows.select(range(limit)) if limit is not None and len(rows) > limit else rows

    def metric(self, name: str) -> float:
        """A registered metric's value, computed once."""
        return self._cached(("metric", name), lambda: float(METRICS[name].compute(self)))

    # ---------------------------------------------------------------------------------------------- QA scores

    def candidate_scores(self, set_name: str) -> list[list[CandidateScore]]:
        """Per question: the answer's score, then the paraphrased answer's (if any), then each perturbed answer's."""

        def compute() -> list[list[CandidateScore]]:
            rows = self.rows(set_name)
            tokenizer = self.bundle.tokenizer
            prompts, candidates = [], []
            answer_only = set_name in ANSWER_ONLY_SETS
            for row in rows:
                if "question" not in row:  # a raw text: scored whole, after bos
                    encoded = [encode_example(tokenizer, row["text"], max_length=self.config.max_length)]
                else:
                    texts = [row["answer"]]
                    if not answer_only:
                        texts += [row["paraphrased_answer"]] if "paraphrased_answer" in rows.column_names else []
                        texts += row.get("perturbed_answer") or []
                    encoded = [encode_example(tokenizer, t, row["question"], self.prompt_format) for t in texts]
                prompts.append(encoded[0].input_ids[: encoded[0].prompt_length])
                candidates.append([e.input_ids[e.prompt_length :] for e in encoded])
            for column in ("question", "answer", "text"):
                if column in rows.column_names:
                    self.record(set_name, column, rows[column])
            logger.info("scoring %d candidate answers of '%s'", sum(map(len, candidates)), set_name)
            return score_candidates(
                self.bundle.model,
                prompts,
                candidates,
                tokenizer.pad_token_id,
                batch_size=self.config.scoring_batch_size,
                progress=True,
            )

        return self._cached(("scores", set_name), compute)

    def answer_scores(self, set_name: str) -> list[CandidateScore]:
        return [group[0] for group in self.candidate_scores(set_name)]

    def _correct_and_perturbed(self, set_name: str) -> tuple[list[list[float]], list[list[list[float]]]]:
        rows = self.rows(set_name)
        if "perturbed_answer" not in rows.column_names:
            raise ValueError(f"evaluation set '{set_name}' has no perturbed_answer field: no truth ratio")
        correct_at = 1 if "paraphrased_answer" in rows.column_names else 0
        groups = self.candidate_scores(set_name)
        correct = [g[correct_at].token_logprobs for g in groups]
        perturbed = [[s.token_logprobs for s in g[correct_at + 1 :]] for g in groups]
        return correct, perturbed

    def truth_ratios(self, set_name: str) -> np.ndarray:
        def compute() -> np.ndarray:
            ratios = tofu.truth_ratios(*self._correct_and_perturbed(set_name))
            self.record(set_name, "truth_ratio", ratios)
            return ratios

        return self._cached(("truth_ratio", set_name), compute)

    def generations(self, set_name: str) -> list[str]:
        def compute() -> list[str]:
            rows = self.rows(set_name)
            tokenizer = self.bundle.tokenizer
            prompts = [encode_prompt(tokenizer, q, self.prompt_format) for q in rows["question"]]
            logger.info("generating answers for %d questions of '%s'", len(prompts), set_name)
            generated = greedy_generate(
                self.bundle.model,
                tokenizer,
                prompts,
                max_new_tokens=self.config.max_new_tokens,
                batch_size=self.config.generation_batch_size,
                progress=True,
            )
            self.record(set_name, "generation", generated)
            return generated

        return self._cached(("generations", set_name), compute)

    # ------------------------------------------------------------------------------------------ text sets

    def continuations(self) -> tuple[list[str], list[str]]:
        """Greedy continuations of the forget completion prompts, and the true continuations."""

        def compute() -> tuple[list[str], list[str]]:
            rows = self.rows("forget_completion")
            tokenizer = self.bundle.tokenizer
            template = self.config.completion_prompt_template
            bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
            prompts = [
                [*bos, *tokenizer(template.format(prompt=p), add_special_tokens=False)["input_ids"]]
                for p in rows["prompt"]
            ]
            max_new_tokens = self.config.completion_max_new_tokens
            if self.config.reference_quirks:  # FLAT's max_length counts the prompt
                max_new_tokens = completion.quirk_max_new_tokens(max(map(len, prompts)))
            generated = greedy_generate(
                self.bundle.model,
                tokenizer,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=self.config.generation_batch_size,
                progress=True,
            )
            self.record("forget_completion", "prompt", rows["prompt"])
            self.record("forget_completion", "continuation", generated)
            return generated, list(rows["reference"])

        return self._cached("continuations", compute)

    def knowmem_answers(self, set_name: str) -> tuple[list[str], list[str]]:
        """MUSE KnowMem on `forget_knowmem` / `retain_knowmem`: in-context QA (shots from its `_shots` set), greedy
        short answers."""

        def compute() -> tuple[list[str], list[str]]:
            shots_rows = self.sets[f"{set_name}_shots"]
            shots = list(zip(shots_rows["question"], shots_rows["answer"], strict=True))[: self.config.knowmem_shots]
            rows = self.rows(set_name)
            if self.config.knowmem_items is not None:
                rows = rows.select(range(min(self.config.knowmem_items, len(rows))))
            tokenizer = self.bundle.tokenizer
            prompts = [tokenizer(completion.knowmem_prompt(q, shots))["input_ids"] for q in rows["question"]]
            generated = greedy_generate(
                self.bundle.model,
                tokenizer,
                prompts,
                max_new_tokens=self.config.knowmem_max_new_tokens,
                batch_size=self.config.generation_batch_size,
            )
            return generated, list(rows["answer"])

        return self._cached(("knowmem", set_name), compute)

    def passage_scores(self, set_name: str) -> list[CandidateScore]:
        def compute() -> list[Any]:
            tokenizer = self.bundle.tokenizer
            texts = self.sets[set_name]["text"]
            examples = [encode_example(tokenizer, text, max_length=self.config.max_length) for text in texts]
            return score_answers(self.bundle.model, examples, tokenizer.pad_token_id, self.config.scoring_batch_size)

        return self._cached(("passage_scores", set_name), compute)


# ------------------------------------------------------------------------------------------------ metrics


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def qa_prob(ctx: EvalContext, set_name: str) -> float:
    """TOFU Q_A_Prob: mean over items of exp(mean answer-token log-probability), eos included."""
    values = [tofu.answer_prob(s.token_logprobs) for s in ctx.answer_scores(set_name)]
    ctx.record(set_name, "Q_A_Prob", values)
    return _mean(values)


def qa_prob_normalised(ctx: EvalContext, set_name: str) -> float:
    """TOFU's real-authors / world-facts probability: p(answer) / (p(answer) + sum of p(wrong answers))."""
    return tofu.prob_normalised(*ctx._correct_and_perturbed(set_name))


def qa_rouge(ctx: EvalContext, set_name: str) -> float:
    """TOFU Q_A_ROUGE: ROUGE-L recall of the greedy answer against the true one."""
    values = rouge_l_recall(ctx.generations(set_name), ctx.rows(set_name)["answer"])
    ctx.record(set_name, "Q_A_ROUGE", values)
    return _mean(values)


def qa_exact_match(ctx: EvalContext, set_name: str) -> float:
    """Share of greedy answers equal to the true answer: ROUGE-L recall stays high for templated wrong facts."""
    values = exact_match(ctx.generations(set_name), ctx.rows(set_name)["answer"])
    ctx.record(set_name, "Q_A_EM", values)
    return _mean(values)


def qa_template_rate(ctx: EvalContext, set_name: str) -> float:
    """Share of greedy answers close to a template answer (ROUGE-L F1 >= `template_threshold`)."""
    if not ctx.templates:
        return float("nan")
    values = template_like(ctx.generations(set_name), ctx.templates, ctx.config.template_threshold)
    ctx.record(set_name, "template_like", values)
    return _mean(values)


def truth_ratio(ctx: EvalContext, set_name: str) -> float:
    """TOFU truth ratio: mean min(R, 1/R) on the forget set, mean max(0, 1 - R) elsewhere."""
    ratios = ctx.truth_ratios(set_name)
    if set_name == "forget":
        return tofu.truth_ratio_closer_to_1(ratios)
    return tofu.truth_ratio_true_better(ratios)


def forget_quality(ctx: EvalContext) -> float:
    """KS-test p-value between this model's and the retain model's per-item forget truth ratios."""
    if ctx.reference is None or not ctx.reference.forget_truth_ratio:
        raise ValueError(
            "forget_quality needs the retain model's per-item forget truth ratios (retain_reference): evaluate the "
            "retain model with forget_quality in evaluate.metrics"
        )
    return tofu.forget_quality(ctx.truth_ratios("forget"), ctx.reference.forget_truth_ratio)


def model_utility(ctx: EvalContext) -> float:
    """Harmonic mean of retain / real-authors / world-facts Prob, ROUGE and truth ratio (a zero makes it zero)."""
    return tofu.model_utility({name: ctx.metric(name) for name in tofu.MODEL_UTILITY_KEYS})


def extraction_strength(ctx: EvalContext) -> float:
    values = [tofu.extraction_strength(s.argmax_hits) for s in ctx.answer_scores("forget")]
    ctx.record("forget", "extraction_strength", values)
    return _mean(values)


def exact_memorization(ctx: EvalContext) -> float:
    values = [tofu.exact_memorization(s.argmax_hits) for s in ctx.answer_scores("forget")]
    ctx.record("forget", "exact_memorization", values)
    return _mean(values)


def _attack_scores(ctx: EvalContext, set_name: str, attack: str) -> list[float]:
    score = mia.MIA_ATTACKS[attack]
    rows = ctx.rows(set_name)
    answers = rows["answer"] if "answer" in rows.column_names else rows["text"]
    return [
        score({"logprobs": s.token_logprobs, "z_scores": s.z_scores, "text": a}, ctx.config.mia_k)
        for s, a in zip(ctx.answer_scores(set_name), answers, strict=True)
    ]


def mia_auc(ctx: EvalContext, attack: str) -> float:
    """ROC AUC of a membership attack telling forget items (label 0) from holdout items (label 1): about 1 when
    the forget set still looks trained on, about 0.5 for a model that never saw it."""
    forget_scores = _attack_scores(ctx, "forget", attack)
    ctx.record("forget", f"mia_{attack}", forget_scores)
    ctx.record("holdout", f"mia_{attack}", _attack_scores(ctx, "holdout", attack))
    return mia.mia_auc(forget_scores, ctx.items["holdout"][f"mia_{attack}"])


def privleak(ctx: EvalContext) -> float:
    """(1 - AUC) against the retain model's (1 - AUC), in percent, from Min-K%: about -100 before unlearning, 0 for
    the retain model, positive when unlearning overshoots."""
    reference_auc = ctx.reference.mia_min_k if ctx.reference is not None else None
    return mia.privleak(ctx.metric("mia_min_k"), reference_auc)


def copyright_metric(ctx: EvalContext, key: str) -> float:
    """FLAT's copyright completion on the forget completion set: BLEU (0-100) or ROUGE-L recall of greedy
    continuations."""
    generated, references = ctx.continuations()
    values = completion.copyright_scores(generated, references, ctx.config.reference_quirks)[key]
    ctx.record("forget_completion", f"copyright_{key}", values)
    return _mean(values)


COPYRIGHT_METRICS = ("forget_copyright_BLEU", "forget_copyright_ROUGE")


def forget_quality_gap(ctx: EvalContext) -> float:
    """FLAT's HP "Forget Quality Gap": |BLEU - BLEU_retain| + |ROUGE-L - ROUGE-L_retain| on the completion set, BLEU
    on 0-100 and ROUGE-L recall on 0-1 as computed (the paper's exact formula and scale are not known, spec §3.4)."""
    if ctx.reference is None or not ctx.reference.completion:
        raise ValueError(
            "forget_quality_gap needs the retain model's copyright BLEU and ROUGE (retain_reference): evaluate the "
            "retain model with forget_quality_gap in evaluate.metrics"
        )
    return sum(abs(ctx.metric(name) - ctx.reference.completion[name]) for name in COPYRIGHT_METRICS)


def verbmem(ctx: EvalContext) -> float:
    """MUSE VerbMem: ROUGE-L F1 of the continuation against the completion set's reference, cut (as MUSE) to as many
    tokens as the continuation may have."""
    generated, references = ctx.continuations()
    tokenizer, budget = ctx.bundle.tokenizer, ctx.config.completion_max_new_tokens
    cut = [tokenizer.decode(tokenizer(ref, add_special_tokens=False)["input_ids"][:budget]) for ref in references]
    values = completion.verbmem_rouge(generated, cut)
    ctx.record("forget_completion", "verbmem_ROUGE", values)
    return _mean(values)


def knowmem(ctx: EvalContext, set_name: str) -> float:
    """MUSE KnowMem: ROUGE-L F1 of in-context answers, cut where the model starts the next question."""
    generated, references = ctx.knowmem_answers(set_name)
    return _mean(completion.knowmem_rouge(generated, references))


def perplexity(ctx: EvalContext, set_name: str) -> float:
    """exp of the mean token negative log-likelihood over every token of a text set (eos included)."""
    scores = ctx.passage_scores(set_name)
    total = sum(-sum(s.token_logprobs) for s in scores)
    return math.exp(total / sum(len(s.token_logprobs) for s in scores))


@dataclass(frozen=True)
class Metric:
    """A registered metric: how to compute it and which evaluation sets it reads."""

    compute: Callable[[EvalContext], float]
    needs: tuple[str, ...]
    needs_reference: bool = False


def _qa_metrics(prefix: str, set_name: str, truth_ratio_name: str, prob: Callable[..., float]) -> dict[str, Metric]:
    needs = (set_name,)
    return {
        f"{prefix}_Q_A_Prob{'_normalised' if prob is qa_prob_normalised else ''}": Metric(
            partial(prob, set_name=set_name), needs
        ),
        f"{prefix}_Q_A_ROUGE": Metric(partial(qa_rouge, set_name=set_name), needs),
        f"{prefix}_{truth_ratio_name}": Metric(partial(truth_ratio, set_name=set_name), needs),
        f"{prefix}_Q_A_EM": Metric(partial(qa_exact_match, set_name=set_name), needs),
        f"{prefix}_Q_A_template_rate": Metric(partial(qa_template_rate, set_name=set_name), needs),
    }


METRICS: dict[str, Metric] = {
    **_qa_metrics("forget", "forget", "truth_ratio", qa_prob),
    **_qa_metrics("retain", "retain", "Truth_Ratio", qa_prob),
    **_qa_metrics("ra", "ra", "Truth_Ratio", qa_prob_normalised),
    **_qa_metrics("wf", "wf", "Truth_Ratio", qa_prob_normalised),
    "forget_quality": Metric(forget_quality, ("forget",), needs_reference=True),
    "model_utility": Metric(model_utility, ("retain", "ra", "wf")),
    "extraction_strength": Metric(extraction_strength, ("forget",)),
    "exact_memorization": Metric(exact_memorization, ("forget",)),
    **{f"mia_{attack}": Metric(partial(mia_auc, attack=attack), ("forget", "holdout")) for attack in mia.MIA_ATTACKS},
    "privleak": Metric(privleak, ("forget", "holdout"), needs_reference=True),
    "forget_copyright_BLEU": Metric(partial(copyright_metric, key="bleu"), ("forget_completion",)),
    "forget_copyright_ROUGE": Metric(partial(copyright_metric, key="rouge_l_recall"), ("forget_completion",)),
    "forget_quality_gap": Metric(forget_quality_gap, ("forget_completion",), needs_reference=True),
    "forget_verbmem_ROUGE": Metric(verbmem, ("forget_completion",)),
    **{
        f"{role}_knowmem_ROUGE": Metric(
            partial(knowmem, set_name=f"{role}_knowmem"), (f"{role}_knowmem", f"{role}_knowmem_shots")
        )
        for role in ("forget", "retain")
    },
    "holdout_perplexity": Metric(partial(perplexity, set_name="holdout_text"), ("holdout_text",)),
}


def check_metrics(names: Sequence[str], sets: Mapping[str, Any]) -> None:
    """Raise before any model work if a metric is unknown or reads an evaluation set the source does not provide."""
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"parameter evaluate.metrics: unknown metric(s) {unknown}; registered: {sorted(METRICS)}")
    for name in names:
        missing = [s for s in METRICS[name].needs if s not in sets]
        if missing:
            raise ValueError(
                f"parameter evaluate.metrics: '{name}' needs the evaluation set(s) {missing}, which this benchmark "
                f"does not provide (it has {sorted(sets)})"
            )


def run_metrics(ctx: EvalContext, metric_names: Sequence[str]) -> dict[str, float]:
    """The requested metrics on a context; those needing the retain reference are skipped when it has none."""
    summary: dict[str, float] = {}
    for name in metric_names:
        if METRICS[name].needs_reference and ctx.reference is None:
            logger.info("skipping %s: no retain reference given", name)
            continue
        summary[name] = ctx.metric(name)
        logger.info("%s = %.6g", name, summary[name])
    return summary


def evaluate_model(
    bundle: ModelBundle,
    sets: EvalSets,
    metric_names: Sequence[str],
    config: EvaluateConfig,
    *,
    prompt_format: str = "plain",
    templates: Sequence[str] = (),
    reference: RetainReference | None = None,
) -> tuple[dict[str, float], EvalContext]:
    """Every requested metric of one model, and the context holding the per-item values."""
    check_metrics(metric_names, sets)
    ctx = EvalContext(bundle, sets, config, prompt_format, templates, reference)
    return run_metrics(ctx, metric_names), ctx


def evaluate_retain_model(
    bundle: ModelBundle,
    sets: EvalSets,
    metric_names: Sequence[str],
    config: EvaluateConfig,
    *,
    forget_split: str,
    prompt_format: str = "plain",
    templates: Sequence[str] = (),
) -> tuple[dict[str, float], EvalContext, RetainReference]:
    """Evaluate the retain model against itself (forget_quality 1, privleak 0, forget_quality_gap 0) and return its
    pinned reference: what the requested metrics compare with (per-item forget truth ratios for forget_quality, the
    Min-K% AUC for privleak, copyright BLEU / ROUGE for forget_quality_gap), with the split, model and tokenizer."""
    check_metrics(metric_names, sets)
    ctx = EvalContext(bundle, sets, config, prompt_format, templates)
    ctx.reference = RetainReference(
        forget_split=forget_split,
        retain_model=bundle.source or "unknown",
        tokenizer=tokenizer_fingerprint(bundle.tokenizer),
        forget_truth_ratio=[float(r) for r in ctx.truth_ratios("forget")] if "forget_quality" in metric_names else [],
        mia_min_k=ctx.metric("mia_min_k") if "privleak" in metric_names else None,
        completion={n: ctx.metric(n) for n in COPYRIGHT_METRICS} if "forget_quality_gap" in metric_names else {},
    )
    return run_metrics(ctx, metric_names), ctx, ctx.reference


def item_table(ctx: EvalContext) -> list[dict[str, Any]]:
    """Per-item results in long form: one record per (set, item) with every value recorded for it."""
    records = []
    for set_name, columns in ctx.items.items():
        n = max(len(values) for values in columns.values())
        for i in range(n):
            record: dict[str, Any] = {"set": set_name, "index": i}
            for column, values in columns.items():
                if i < len(values):
                    value = values[i]
                    record[column] = value.item() if isinstance(value, np.generic) else value
            records.append(record)
    return records
