"""The evaluation sets by role, built from the benchmark splits `evaluate.sets` names (roles in the package
docstring)."""

from __future__ import annotations

from collections.abc import Mapping

from datasets import Dataset

from flat_pipeline.data.text_chunks import split_passage

ANSWER_ONLY_SETS = {"holdout"}  # membership-inference negatives: only their true answers are scored
# The truth ratio weighs the wrong answers against the answer itself on real authors and world facts, and against
# the paraphrase elsewhere (open-unlearning's ra / wf metrics), whether or not the rows carry a paraphrase (TOFU's
# real_authors_perturbed does, equal to the answer).
ANSWER_IS_CORRECT_SETS = {"ra", "wf"}


def uses_paraphrase(set_name: str, rows: Dataset) -> bool:
    """Whether a set's truth ratio compares with its paraphrased answers."""
    return set_name not in ANSWER_IS_CORRECT_SETS and "paraphrased_answer" in rows.column_names


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
