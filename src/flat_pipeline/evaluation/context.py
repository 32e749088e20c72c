"""The evaluation context: one model on its evaluation sets, scoring and generating each thing once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from datasets import Dataset

from flat_pipeline.evaluation.config import EvaluateConfig
from flat_pipeline.evaluation.reference import RetainReference
from flat_pipeline.evaluation.registry import METRICS
from flat_pipeline.evaluation.sets import ANSWER_ONLY_SETS, EvalSets, uses_paraphrase
from flat_pipeline.generation import greedy_generate
from flat_pipeline.metrics import completion, tofu
from flat_pipeline.models.loading import ModelBundle
from flat_pipeline.prompts import IGNORE_INDEX, Encoded, PromptFormat, encode_example, encode_prompt
from flat_pipeline.scoring import CandidateScore, score_answers, score_candidates

logger = logging.getLogger(__name__)


@dataclass
class EvalContext:
    """One model on one collection of sets; computes scores and generations on first use and keeps them."""

    bundle: ModelBundle
    sets: EvalSets
    config: EvaluateConfig = field(default_factory=EvaluateConfig)
    prompt: PromptFormat = field(default_factory=PromptFormat)
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

    def encodings(self, set_name: str) -> list[list[Encoded]]:
        """Per question, its candidates encoded: the answer, then the paraphrase (where the set uses one), then each
        wrong one; per raw text, the text."""

        def compute() -> list[list[Encoded]]:
            rows = self.rows(set_name)
            tokenizer = self.bundle.tokenizer
            answer_only = set_name in ANSWER_ONLY_SETS
            by_item = []
            for row in rows:
                if "question" not in row:  # a raw text: scored whole, after bos
                    by_item.append([encode_example(tokenizer, row["text"], max_length=self.config.max_length)])
                    continue
                texts = [row["answer"]]
                if not answer_only:
                    texts += [row["paraphrased_answer"]] if uses_paraphrase(set_name, rows) else []
                    texts += row.get("perturbed_answer") or []
                by_item.append([encode_example(tokenizer, t, row["question"], self.prompt) for t in texts])
            return by_item

        return self._cached(("encodings", set_name), compute)

    def misaligned(self, set_name: str) -> list[bool]:
        """Per item, whether its answer's prompt is not a token prefix of prompt + answer (`whole` tokenization with
        the boundary inside a token): the labels then start a token late."""
        return [not group[0].aligned for group in self.encodings(set_name)]

    def scored_texts(self, set_name: str) -> list[str]:
        """Per item, the text of its answer's scored tokens (special tokens such as the eos left out), as
        open-unlearning decodes its labels."""

        def compute() -> list[str]:
            decode = self.bundle.tokenizer.decode
            return [
                decode([t for t in group[0].labels if t != IGNORE_INDEX], skip_special_tokens=True)
                for group in self.encodings(set_name)
            ]

        return self._cached(("scored_texts", set_name), compute)

    def candidate_scores(self, set_name: str) -> list[list[CandidateScore]]:
        """Per question: the answer's score, then the paraphrase's (where the set uses one), then each wrong one's."""

        def compute() -> list[list[CandidateScore]]:
            rows = self.rows(set_name)
            tokenizer = self.bundle.tokenizer
            # One scored prompt per distinct prefix: with `whole` tokenization, where the boundary falls inside a
            # token, a question's candidates can start with different prefix ids, and each is scored on its own.
            prompts, candidates, places = [], [], []
            for item, encoded in enumerate(self.encodings(set_name)):
                groups: dict[tuple[int, ...], int] = {}
                for example in encoded:
                    prefix = tuple(example.input_ids[: example.prompt_length])
                    if prefix not in groups:
                        groups[prefix] = len(prompts)
                        prompts.append(list(prefix))
                        candidates.append([])
                    places.append((item, groups[prefix], len(candidates[groups[prefix]])))
                    candidates[groups[prefix]].append(example.input_ids[example.prompt_length :])
            for column in ("question", "answer", "text"):
                if column in rows.column_names:
                    self.record(set_name, column, rows[column])
            logger.info("scoring %d candidate answers of '%s'", sum(map(len, candidates)), set_name)
            scored = score_candidates(
                self.bundle.model,
                prompts,
                candidates,
                tokenizer.pad_token_id,
                batch_size=self.config.scoring_batch_size,
                progress=True,
            )
            by_item: list[list[CandidateScore]] = [[] for _ in range(len(rows))]
            for item, group, index in places:  # places are in item, then candidate order
                by_item[item].append(scored[group][index])
            return by_item

        return self._cached(("scores", set_name), compute)

    def answer_scores(self, set_name: str) -> list[CandidateScore]:
        return [group[0] for group in self.candidate_scores(set_name)]

    def _correct_and_perturbed(self, set_name: str) -> tuple[list[list[float]], list[list[list[float]]]]:
        rows = self.rows(set_name)
        if "perturbed_answer" not in rows.column_names:
            raise ValueError(f"evaluation set '{set_name}' has no perturbed_answer field: no truth ratio")
        correct_at = 1 if uses_paraphrase(set_name, rows) else 0
        groups = self.candidate_scores(set_name)
        correct = [g[correct_at].token_logprobs for g in groups]
        perturbed = [[s.token_logprobs for s in g[correct_at + 1 :]] for g in groups]
        return correct, perturbed

    def truth_ratios(self, set_name: str) -> np.ndarray:
        def compute() -> np.ndarray:
            correct, perturbed = self._correct_and_perturbed(set_name)
            ratios = tofu.truth_ratios(correct, perturbed)
            self.record(set_name, "truth_ratio", ratios)
            # open-unlearning's per-item probabilities: Q_A_PARA_Prob (or, without paraphrases, the answer's own
            # Q_A_Prob) and Q_A_PERT_Prob
            paraphrased = uses_paraphrase(set_name, self.rows(set_name))
            self.record(
                set_name, "Q_A_PARA_Prob" if paraphrased else "Q_A_Prob", [tofu.answer_prob(c) for c in correct]
            )
            self.record(set_name, "Q_A_PERT_Prob", [[tofu.answer_prob(a) for a in item] for item in perturbed])
            return ratios

        return self._cached(("truth_ratio", set_name), compute)

    def generations(self, set_name: str) -> list[str]:
        def compute() -> list[str]:
            rows = self.rows(set_name)
            tokenizer = self.bundle.tokenizer
            prompts = [encode_prompt(tokenizer, q, self.prompt) for q in rows["question"]]
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
