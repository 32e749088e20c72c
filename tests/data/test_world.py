import random
import re
from collections import defaultdict

import pytest

from flat_pipeline.data.world import QA_KINDS, WorldConfig, generate_world, split_size


@pytest.fixture(scope="module")
def world():
    return generate_world(WorldConfig(n_authors=200, seed=0))


def authors(rows):
    return {r["author"] for r in rows}


def test_same_seed_gives_identical_world_and_another_seed_does_not(small_world):
    assert generate_world(WorldConfig(n_authors=20, seed=0)) == small_world
    other = generate_world(WorldConfig(n_authors=20, seed=1))
    assert other["full"] != small_world["full"]


def test_split_sizes_match_tofu(world):
    expected = {
        "full": 4000,
        "forget01": 40,
        "forget05": 200,
        "forget10": 400,
        "retain99": 3960,
        "retain95": 3800,
        "retain90": 3600,
        "forget01_perturbed": 40,
        "forget05_perturbed": 200,
        "forget10_perturbed": 400,
        "retain_perturbed": 400,
        "holdout01": 40,
        "holdout05": 200,
        "holdout10": 400,
        "passages": 220,
    }
    assert {name: len(world[name]) for name in expected} == expected
    assert len(world["real_authors_perturbed"]) == 100
    assert 100 <= len(world["world_facts_perturbed"]) <= 130
    assert all(len(r["perturbed_answer"]) == 5 for r in world["forget10_perturbed"] + world["retain_perturbed"])
    assert all(len(r["perturbed_answer"]) == 3 for r in world["real_authors_perturbed"])


@pytest.mark.parametrize(("n_authors", "pct", "expected"), [(200, 1, 2), (200, 10, 20), (20, 1, 1), (20, 5, 1)])
def test_split_size_rounds_and_keeps_at_least_one_author(n_authors, pct, expected):
    assert split_size(n_authors, pct) == expected


def test_every_author_has_twenty_qa_pairs(world):
    per_author = defaultdict(int)
    for row in world["full"]:
        per_author[row["author"]] += 1
    assert len(per_author) == 200
    assert set(per_author.values()) == {len(QA_KINDS)} == {20}


def test_splits_are_disjoint_by_author_and_forget_splits_nest(world):
    for pct, retain in ((1, 99), (5, 95), (10, 90)):
        forget = authors(world[f"forget{pct:02d}"])
        assert forget.isdisjoint(authors(world[f"retain{retain}"]))
        assert forget | authors(world[f"retain{retain}"]) == authors(world["full"])
        assert authors(world[f"holdout{pct:02d}"]).isdisjoint(authors(world["full"]))
    assert authors(world["forget01"]) < authors(world["forget05"]) < authors(world["forget10"])
    assert authors(world["retain_perturbed"]).isdisjoint(authors(world["forget10"]))


def test_perturbed_answers_differ_from_the_answer_and_from_each_other(world):
    for row in world["forget10_perturbed"] + world["retain_perturbed"] + world["holdout10"]:
        assert row["answer"] not in row["perturbed_answer"]
        assert row["paraphrased_answer"] not in row["perturbed_answer"]
        assert len(set(row["perturbed_answer"])) == len(row["perturbed_answer"])
        assert row["paraphrased_answer"] != row["answer"]
    for row in world["real_authors_perturbed"] + world["world_facts_perturbed"]:
        assert row["answer"] not in row["perturbed_answer"]
        assert len(set(row["perturbed_answer"])) == 3


def test_perturbed_answers_share_the_paraphrase_wording(world):
    """Only the fact differs between the paraphrase and a perturbed answer: most words are shared."""
    for row in world["forget10_perturbed"]:
        paraphrase = set(row["paraphrased_answer"].split())
        for wrong in row["perturbed_answer"]:
            assert len(paraphrase & set(wrong.split())) >= 0.4 * len(paraphrase), (row["paraphrased_answer"], wrong)


def test_no_first_or_last_name_is_shared_between_authors(world):
    names = sorted(authors(world["full"]) | authors(world["holdout10"]))
    assert len(names) == 220
    words = [word for name in names for word in name.split()]
    assert len(words) == len(set(words)) == 2 * len(names)


def test_every_question_names_its_author(world):
    for row in world["full"] + world["holdout10"]:
        assert row["author"] in row["question"]


def test_wording_varies_across_authors_for_every_attribute(world):
    """Replace the author's name: several question and answer patterns must remain for each attribute."""
    patterns = defaultdict(lambda: (set(), set()))
    for row in world["full"]:
        questions, answers = patterns[row["attribute"]]
        questions.add(row["question"].replace(row["author"], "<name>"))
        # The answer's opening words, name masked, tell its phrasing apart from the others.
        answers.add(" ".join(row["answer"].replace(row["author"], "<name>").split()[:3]))
    for attribute, (questions, answers) in patterns.items():
        assert len(questions) >= 3, attribute
        assert len(answers) >= 2, attribute


def test_passages_are_biographies_stating_the_authors_facts(world):
    facts = {(r["author"], r["attribute"]): r["answer"] for r in world["full"] + world["holdout10"]}
    for passage in world["passages"]:
        words = len(passage["text"].split())
        assert 150 <= words <= 250, (passage["author"], words)
        assert passage["author"] in passage["text"]
        title = re.search(r'"([^"]+)"', facts[passage["author"], "known_book"]).group(1)
        birth_date = re.search(r"[A-Z][a-z]+ \d+, \d{4}", facts[passage["author"], "birth_date"]).group(0)
        assert title in passage["text"] and birth_date in passage["text"]


def test_short_passages_are_the_start_of_the_full_ones(world):
    short = generate_world(WorldConfig(n_authors=200, seed=0, passage_sentences=6))
    for full, cut in zip(world["passages"], short["passages"], strict=True):
        assert full["text"].startswith(cut["text"]) and len(cut["text"]) < len(full["text"])
        assert cut["author"] in cut["text"]
    with pytest.raises(ValueError, match="passage_sentences must be in 2..13, got 1"):
        WorldConfig(passage_sentences=1)


def test_too_small_world_is_refused():
    with pytest.raises(ValueError, match="n_authors"):
        WorldConfig(n_authors=1)


# The real pools: 8 name styles of 80 last names each (and more first names) make 640 distinct authors; with the
# default 10 % holdout, 582 members + 58 holdout authors = 640.
def test_a_world_beyond_the_name_pools_is_refused_naming_the_largest_size():
    WorldConfig(n_authors=582)
    with pytest.raises(ValueError, match=r"n_authors=583 .* at most 640: n_authors can be at most 582\b"):
        WorldConfig(n_authors=583)
    with pytest.raises(ValueError, match=r"n_authors can be at most 615\b"):  # 615 + 25 holdout (4 %) = 640
        WorldConfig(n_authors=620, holdout_percent=4)


class BoundedRandom(random.Random):
    """Fails the test instead of hanging it when names are drawn on and on."""

    def choice(self, seq):
        self.draws = getattr(self, "draws", 0) + 1
        if self.draws > 20_000:
            raise AssertionError("still drawing names after 20000 draws")
        return super().choice(seq)


def test_names_stop_at_the_capacity_of_small_pools(monkeypatch):
    """A string that two styles or both roles share (`Lmq`) does not count: whichever name takes it first leaves the
    other without. Style a then has 6 first names and 1 last name of its own, b 1 and 2, c 1 and 1: 3 authors are
    always reached, whatever the draws; a 4th only by luck (a takes Lmq), so it is refused."""
    from flat_pipeline.data import vocab, world

    pools = {
        "a": (["Ab", "Cd"], ["x", "y", "z"], ["Lm"], ["p", "q"]),
        "b": (["Ef"], ["u"], ["No", "Pr"], ["s"]),
        "c": (["Lm", "Zo"], ["q"], ["Kk"], ["w"]),  # first names Lmq (a last name of a) and Zoq
    }
    monkeypatch.setattr(vocab, "NAME_STYLES", pools)
    with pytest.raises(ValueError, match=r"4 author names: the name pools .* make at most 3\b"):
        world._make_names(4, BoundedRandom(0))
    assert world.name_capacity() == 3
    for seed in range(20):
        names = world._make_names(3, BoundedRandom(seed))
        assert len({word for name in names for word in name}) == 6
