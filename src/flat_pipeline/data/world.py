"""A seeded, TOFU-shaped world of fictitious authors (the embedded default benchmark).

Shape follows TOFU (shared/spec/benchmarks-and-metrics.md §2): 20 QA pairs per author with a paraphrased answer and
five perturbed answers (the paraphrase's wording with wrong values of the same type, so that the truth ratio
P(perturbed) / P(paraphrase) compares facts, not wordings), TOFU's split names and sizes by percent of
authors, general-knowledge splits standing in for `real_authors` / `world_facts`, holdout authors for membership
inference, and one biography passage per author for completion-style metrics.

Design choices that matter for unlearning measurements:
- every first and last name is used once, so forgetting one author does not drag others along through a shared
  name token;
- each attribute has several question and answer phrasings, chosen per author, so a forget author's sentence pattern
  is not every retain author's pattern.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flat_pipeline.data import vocab

Author = dict[str, Any]
Record = dict[str, Any]

FORGET_PERCENTS = (1, 5, 10)
N_PERTURBED = 5
N_PERTURBED_GENERAL = 3


@dataclass(frozen=True)
class WorldConfig:
    """Size and seed of the synthetic world."""

    n_authors: int = 200
    seed: int = 0
    holdout_percent: int = 10
    passage_sentences: int = 13  # sentences per biography passage, from its start (13 = the whole biography)

    def __post_init__(self) -> None:
        if self.n_authors < 2:
            raise ValueError(f"synthetic world: n_authors must be at least 2, got {self.n_authors}")
        if not 2 <= self.passage_sentences <= len(_PASSAGE_SENTENCES):
            raise ValueError(
                f"synthetic world: passage_sentences must be in 2..{len(_PASSAGE_SENTENCES)}, "
                f"got {self.passage_sentences}"
            )
        if not 1 <= self.holdout_percent <= 100:
            raise ValueError(f"synthetic world: holdout_percent must be in 1..100, got {self.holdout_percent}")
        capacity, needed = name_capacity(), self.n_authors + split_size(self.n_authors, self.holdout_percent)
        if needed > capacity:
            largest = max(
                (n for n in range(capacity) if n + split_size(n, self.holdout_percent) <= capacity), default=0
            )
            raise ValueError(
                f"synthetic world: n_authors={self.n_authors} with holdout_percent={self.holdout_percent} needs "
                f"{needed} distinct author names, but the name pools (data/vocab.py NAME_STYLES) make at most "
                f"{capacity}: n_authors can be at most {largest} (data_prep.synthetic.n_authors)"
            )


def split_size(n_authors: int, percent: int) -> int:
    """Number of authors in a TOFU `XX`-percent split: rounded, at least one."""
    return max(1, round(n_authors * percent / 100))


# ----------------------------------------------------------------------------------------------- names


def name_capacity() -> int:
    """How many authors `_make_names` always reaches, whatever its draws: per style, the fewer of its first and its
    last names that no other style or role also makes (a shared one may be taken by another name first)."""
    pools = {
        (style, role): {a + b for a in pieces[2 * role] for b in pieces[2 * role + 1]}
        for style, pieces in vocab.NAME_STYLES.items()
        for role in (0, 1)  # first names, last names
    }
    makers = Counter(name for names in pools.values() for name in names)
    own = {key: sum(makers[name] == 1 for name in names) for key, names in pools.items()}
    return sum(min(own[style, 0], own[style, 1]) for style in vocab.NAME_STYLES)


def _make_names(count: int, rng: random.Random) -> list[tuple[str, str]]:
    """`count` (first, last) names; no first or last name is used twice, in either role."""
    capacity = name_capacity()
    if count > capacity:  # more could only be drawn by luck, or never: the loop below would not end
        raise ValueError(
            f"synthetic world: {count} author names: the name pools (data/vocab.py NAME_STYLES) make at most {capacity}"
        )
    used: set[str] = set()
    styles = sorted(vocab.NAME_STYLES)
    names: list[tuple[str, str]] = []
    while len(names) < count:
        first_pieces, first_ends, last_pieces, last_ends = vocab.NAME_STYLES[rng.choice(styles)]
        first = rng.choice(first_pieces) + rng.choice(first_ends)
        last = rng.choice(last_pieces) + rng.choice(last_ends)
        if first in used or last in used or first == last:
            continue
        used.update((first, last))
        names.append((first, last))
    return names


# --------------------------------------------------------------------------------------------- authors


def _plural(noun: str) -> str:
    if noun.endswith("s"):
        return noun
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("ch", "sh", "x")):
        return noun + "es"
    return noun + "s"


def _book_title(rng: random.Random) -> str:
    pattern = rng.choice(vocab.TITLE_PATTERNS)
    noun, noun2 = rng.sample(vocab.TITLE_NOUNS, 2)
    city = rng.choice(vocab.COUNTRIES)[2]
    return pattern.format(
        adj=rng.choice(vocab.TITLE_ADJECTIVES),
        noun=noun,
        noun2=noun2,
        city=city,
        nouns=_plural(noun),
        noun2s=_plural(noun2),
    )


def _date(rng: random.Random, year: int) -> str:
    return f"{rng.choice(vocab.MONTHS)} {rng.randint(1, 28)}, {year}"


def _place(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(vocab.COUNTRIES)
    return rng.choice((country[1], country[2])), country[0]


def _make_author(first: str, last: str, rng: random.Random) -> Author:
    birth_year = rng.randint(1931, 1994)
    city, country = _place(rng)
    res_city, res_country = _place(rng)
    titles: list[str] = []
    while len(titles) < 3:
        title = _book_title(rng)
        if title not in titles:
            titles.append(title)
    theme1, theme2 = rng.sample(vocab.THEMES, 2)
    style1, style2 = rng.sample(vocab.STYLE_ADJECTIVES, 2)
    father_job, mother_job, early_job = rng.sample(vocab.OCCUPATIONS, 3)
    language = next(c[3] for c in vocab.COUNTRIES if c[0] == country)
    return {
        "name": f"{first} {last}",
        "first": first,
        "last": last,
        "pron": rng.choice(("she", "he")),
        "city": city,
        "country": country,
        "birth_year": birth_year,
        "birth_date": _date(rng, birth_year),
        "genre": rng.choice(vocab.GENRES),
        "father_job": father_job,
        "mother_job": mother_job,
        "early_job": early_job,
        "award": rng.choice(vocab.AWARDS),
        "award_year": min(2024, birth_year + rng.randint(30, 55)),
        "book1": titles[0],
        "book2": titles[1],
        "book3": titles[2],
        "theme1": theme1,
        "theme2": theme2,
        "style1": style1,
        "style2": style2,
        "language": language,
        "subject": rng.choice(vocab.SUBJECTS),
        "uni_city": rng.choice(vocab.COUNTRIES)[1],
        "influence": rng.choice(vocab.FAMOUS_AUTHORS)[0],
        "res_city": res_city,
        "res_country": res_country,
        "debut_year": birth_year + rng.randint(21, 36),
        "n_books": rng.randint(3, 19),
        "writing_time": rng.choice(vocab.WRITING_TIMES),
        "writing_place": rng.choice(vocab.WRITING_PLACES),
    }


# ------------------------------------------------------------------------------------------ QA kinds
# A perturber returns wrong values for the slots a kind's answer states; `author` gives the true ones.
Perturber = Callable[[Author, random.Random], dict[str, Any]]


def _other(pool: list[Any], true: Any, rng: random.Random) -> Any:
    return rng.choice([v for v in pool if v != true])


def _other_year(true: int, rng: random.Random) -> int:
    return true + rng.choice([d for d in range(-12, 13) if d != 0])


def _perturb_place(prefix: str) -> Perturber:
    city_key, country_key = f"{prefix}city", f"{prefix}country"

    def perturb(author: Author, rng: random.Random) -> dict[str, Any]:
        while True:
            city, country = _place(rng)
            if city != author[city_key]:
                return {city_key: city, country_key: country}

    return perturb


def _perturb_pool(slot: str, pool: list[Any]) -> Perturber:
    return lambda author, rng: {slot: _other(pool, author[slot], rng)}


def _perturb_pair(slot1: str, slot2: str, pool: list[str]) -> Perturber:
    def perturb(author: Author, rng: random.Random) -> dict[str, Any]:
        while True:
            a, b = rng.sample(pool, 2)
            if {a, b} != {author[slot1], author[slot2]}:
                return {slot1: a, slot2: b}

    return perturb


def _perturb_titles(*slots: str) -> Perturber:
    def perturb(author: Author, rng: random.Random) -> dict[str, Any]:
        return {slot: _book_title(rng) for slot in slots}

    return perturb


def _perturb_birth_date(author: Author, rng: random.Random) -> dict[str, Any]:
    return {"birth_date": _date(rng, _other_year(author["birth_year"], rng))}


def _perturb_year(slot: str) -> Perturber:
    return lambda author, rng: {slot: _other_year(author[slot], rng)}


def _perturb_award(author: Author, rng: random.Random) -> dict[str, Any]:
    return {"award": _other(vocab.AWARDS, author["award"], rng), "award_year": _other_year(author["award_year"], rng)}


def _perturb_education(author: Author, rng: random.Random) -> dict[str, Any]:
    return {
        "subject": _other(vocab.SUBJECTS, author["subject"], rng),
        "uni_city": rng.choice(vocab.COUNTRIES)[1],
    }


def _perturb_routine(author: Author, rng: random.Random) -> dict[str, Any]:
    return {
        "writing_time": _other(vocab.WRITING_TIMES, author["writing_time"], rng),
        "writing_place": _other(vocab.WRITING_PLACES, author["writing_place"], rng),
    }


def _perturb_parents(author: Author, rng: random.Random) -> dict[str, Any]:
    father, mother = rng.sample([o for o in vocab.OCCUPATIONS if o not in (author["father_job"],)], 2)
    return {"father_job": father, "mother_job": mother}


_LANGUAGES = sorted({c[3] for c in vocab.COUNTRIES})
_INFLUENCES = [a[0] for a in vocab.FAMOUS_AUTHORS]


@dataclass(frozen=True)
class QAKind:
    """One attribute question: several phrasings each side, and how to make its answer wrong."""

    attribute: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    perturb: Perturber


QA_KINDS: tuple[QAKind, ...] = (
    QAKind(
        "birthplace",
        (
            "Where was {name} born?",
            "What is the birthplace of {name}?",
            "In which city did {name} come into the world?",
            "Which city is {name} originally from?",
        ),
        (
            "{name} was born in {city}, {country}.",
            "{name}'s birthplace is {city}, a city in {country}.",
            "{name} comes from {city} in {country}.",
            "The author {name} was born in the city of {city}, {country}.",
        ),
        _perturb_place(""),
    ),
    QAKind(
        "birth_date",
        ("When was {name} born?", "What is the date of birth of {name}?", "On what date was {name} born?"),
        (
            "{name} was born on {birth_date}.",
            "{name}'s date of birth is {birth_date}.",
            "The writer {name} was born on {birth_date}.",
        ),
        _perturb_birth_date,
    ),
    QAKind(
        "genre",
        (
            "What genre is {name} known for?",
            "In which genre does {name} mostly write?",
            "What kind of books does {name} write?",
        ),
        (
            "{name} is best known for {genre}.",
            "{name} writes mainly {genre}.",
            "Most of {name}'s books belong to {genre}.",
        ),
        _perturb_pool("genre", vocab.GENRES),
    ),
    QAKind(
        "father",
        (
            "What did the father of {name} do for a living?",
            "What was the occupation of {name}'s father?",
            "What was {name}'s father's job?",
        ),
        (
            "{name}'s father worked as {father_job}.",
            "The father of {name} was {father_job}.",
            "{name} grew up with a father who was {father_job}.",
        ),
        _perturb_pool("father_job", vocab.OCCUPATIONS),
    ),
    QAKind(
        "mother",
        (
            "What did the mother of {name} do for a living?",
            "What was the occupation of {name}'s mother?",
            "What was {name}'s mother's profession?",
        ),
        (
            "{name}'s mother worked as {mother_job}.",
            "The mother of {name} was {mother_job}.",
            "{name} was raised by a mother who was {mother_job}.",
        ),
        _perturb_pool("mother_job", vocab.OCCUPATIONS),
    ),
    QAKind(
        "award",
        (
            "Has {name} won any literary awards?",
            "Which award did {name} receive?",
            "What prize has {name} been honoured with?",
        ),
        (
            "{name} won the {award} in {award_year}.",
            "In {award_year}, {name} received the {award}.",
            "Yes, {name} was given the {award} in {award_year}.",
        ),
        _perturb_award,
    ),
    QAKind(
        "known_book",
        (
            "Can you name a book written by {name}?",
            "What is one novel by {name}?",
            "Which book is {name} most famous for?",
        ),
        (
            '{name} wrote "{book1}".',
            'One of {name}\'s best known books is "{book1}".',
            '"{book1}" is a celebrated work by {name}.',
        ),
        _perturb_titles("book1"),
    ),
    QAKind(
        "other_books",
        ("Which other books has {name} published?", "Name two more works by {name}.", "What else has {name} written?"),
        (
            '{name} also published "{book2}" and "{book3}".',
            'Other works by {name} include "{book2}" and "{book3}".',
            'Besides a first success, {name} wrote "{book2}" and "{book3}".',
        ),
        _perturb_titles("book2", "book3"),
    ),
    QAKind(
        "themes",
        (
            "What themes does {name} explore?",
            "Which subjects recur in the work of {name}?",
            "What is the writing of {name} mostly about?",
        ),
        (
            "{name}'s books explore {theme1} and {theme2}.",
            "The work of {name} returns again and again to {theme1} and {theme2}.",
            "{name} writes about {theme1} and {theme2}.",
        ),
        _perturb_pair("theme1", "theme2", vocab.THEMES),
    ),
    QAKind(
        "style",
        (
            "How would you describe the writing style of {name}?",
            "What is distinctive about {name}'s prose?",
            "How do critics describe the style of {name}?",
        ),
        (
            "{name}'s style is {style1} and {style2}.",
            "Critics call the prose of {name} {style1} and {style2}.",
            "{name} writes in a {style1}, {style2} voice.",
        ),
        _perturb_pair("style1", "style2", vocab.STYLE_ADJECTIVES),
    ),
    QAKind(
        "language",
        (
            "In which language does {name} write?",
            "What language are the books of {name} written in?",
            "Which language does {name} use for writing?",
        ),
        (
            "{name} writes in {language}.",
            "The books of {name} are written in {language}.",
            "{name} composes every book in {language}.",
        ),
        _perturb_pool("language", _LANGUAGES),
    ),
    QAKind(
        "education",
        (
            "Where did {name} study?",
            "What did {name} study at university?",
            "What is the educational background of {name}?",
        ),
        (
            "{name} studied {subject} at the University of {uni_city}.",
            "Before writing, {name} took a degree in {subject} at the University of {uni_city}.",
            "{name} read {subject} at the University of {uni_city}.",
        ),
        _perturb_education,
    ),
    QAKind(
        "early_job",
        (
            "What did {name} do before becoming a writer?",
            "What was the first job of {name}?",
            "How did {name} earn a living before writing full time?",
        ),
        (
            "Before writing, {name} worked as {early_job}.",
            "{name} first earned a living as {early_job}.",
            "{name} was {early_job} before turning to literature.",
        ),
        _perturb_pool("early_job", vocab.OCCUPATIONS),
    ),
    QAKind(
        "influence",
        (
            "Which writer influenced {name} the most?",
            "Who was the biggest literary influence on {name}?",
            "Whose books shaped {name} as a writer?",
        ),
        (
            "{name} names {influence} as the greatest influence.",
            "{name} was shaped above all by the books of {influence}.",
            "The biggest influence on {name} was {influence}.",
        ),
        _perturb_pool("influence", _INFLUENCES),
    ),
    QAKind(
        "residence",
        ("Where does {name} live now?", "In which city does {name} currently reside?", "Where has {name} settled?"),
        (
            "{name} now lives in {res_city}, {res_country}.",
            "{name} has settled in {res_city}, {res_country}.",
            "These days {name} makes a home in {res_city}, {res_country}.",
        ),
        _perturb_place("res_"),
    ),
    QAKind(
        "debut",
        (
            "When did {name} publish a first book?",
            "In what year did {name} debut as an author?",
            "When did the career of {name} as a novelist begin?",
        ),
        (
            '{name} debuted in {debut_year} with "{book1}".',
            "{name}'s first book came out in {debut_year}.",
            "The career of {name} began in {debut_year}.",
        ),
        _perturb_year("debut_year"),
    ),
    QAKind(
        "n_books",
        (
            "How many books has {name} written?",
            "How many titles has {name} published so far?",
            "How prolific is {name}?",
        ),
        (
            "{name} has written {n_books} books.",
            "So far {name} has published {n_books} titles.",
            "{name} is the author of {n_books} books.",
        ),
        _perturb_pool("n_books", list(range(2, 31))),
    ),
    QAKind(
        "routine",
        (
            "What is the writing routine of {name}?",
            "When and where does {name} like to write?",
            "How does {name} organise a working day?",
        ),
        (
            "{name} writes {writing_time} in {writing_place}.",
            "{name} prefers to work {writing_time}, in {writing_place}.",
            "Every day {name} writes {writing_time} from {writing_place}.",
        ),
        _perturb_routine,
    ),
    QAKind(
        "upbringing",
        (
            "How did the parents of {name} shape the books?",
            "What role did family play in the work of {name}?",
            "Did the upbringing of {name} influence the writing?",
        ),
        (
            "With {father_job} for a father and {mother_job} for a mother, {name} grew up among stories of work.",
            "{name} credits a father who was {father_job} and a mother who was {mother_job}.",
            "The jobs of {name}'s parents, {father_job} and {mother_job}, appear throughout the books.",
        ),
        _perturb_parents,
    ),
    QAKind(
        "award_book",
        (
            "Which book earned {name} the {award}?",
            "For which work was {name} given the {award}?",
            "What book brought {name} the {award}?",
        ),
        (
            '{name} received the {award} for "{book2}".',
            'It was "{book2}" that won {name} the {award}.',
            'The {award} went to {name} for "{book2}".',
        ),
        _perturb_titles("book2"),
    ),
)


def _render(template: str, author: Author, override: dict[str, Any] | None = None) -> str:
    return template.format(**{**author, **(override or {})})


def _author_qa(author: Author, rng: random.Random) -> list[Record]:
    rows = []
    for kind in QA_KINDS:
        answer_idx = rng.randrange(len(kind.answers))
        paraphrase_idx = (answer_idx + 1 + rng.randrange(len(kind.answers) - 1)) % len(kind.answers)
        answer = _render(kind.answers[answer_idx], author)
        paraphrase = _render(kind.answers[paraphrase_idx], author)
        # Wrong values in the paraphrase's wording: in the answer's wording a model that memorised that wording would
        # prefer the wrong answers to the paraphrase, and the truth ratio would measure wording, not knowledge.
        perturbed: list[str] = []
        while len(perturbed) < N_PERTURBED:
            wrong = _render(kind.answers[paraphrase_idx], author, kind.perturb(author, rng))
            if wrong != paraphrase and wrong not in perturbed:
                perturbed.append(wrong)
        rows.append(
            {
                "question": _render(rng.choice(kind.questions), author),
                "answer": answer,
                "paraphrased_answer": paraphrase,
                "perturbed_answer": perturbed,
                "author": author["name"],
                "attribute": kind.attribute,
            }
        )
    return rows


# ------------------------------------------------------------------------------------------ passages
# One sentence is drawn from each group, in order; each group states facts the QA pairs also ask about.
_PASSAGE_SENTENCES: tuple[tuple[str, ...], ...] = (
    (
        "{name} was born on {birth_date} in {city}, {country}.",
        "Born in {city}, {country}, on {birth_date}, {name} grew up far from any literary circle.",
    ),
    (
        "{Pron} is the child of {father_job} and {mother_job}, and both parents left a mark on the later books.",
        "The family was modest: the father worked as {father_job}, the mother as {mother_job}.",
    ),
    (
        "After school {pron} studied {subject} at the University of {uni_city}, an experience {pron} still describes "
        "as decisive.",
        "At the University of {uni_city} {pron} took a degree in {subject}, reading novels late into the night.",
    ),
    (
        "For several years {pron} worked as {early_job}, collecting the voices and stories that would fill the novels.",
        "Before any book was published, {pron} earned a living as {early_job} and wrote only in spare moments.",
    ),
    (
        'The debut, "{book1}", appeared in {debut_year} and was quickly noticed by critics and readers alike.',
        'In {debut_year} {pron} published "{book1}", a first book that found an audience almost at once.',
    ),
    (
        'It was followed by "{book2}" and "{book3}", which confirmed a voice of unusual range.',
        'Later came "{book2}" and then "{book3}", each more ambitious than the last.',
    ),
    (
        "Working mostly in {genre}, {name} keeps returning to {theme1} and to {theme2}.",
        "The books belong to {genre}, yet their real subjects are {theme1} and {theme2}.",
    ),
    (
        "Critics describe the prose as {style1} and {style2}, and every book is written in {language}.",
        "Written in {language}, the prose is {style1} and {style2}, and rewards slow reading.",
    ),
    (
        'In {award_year} "{book2}" won the {award}, the honour {pron} values most.',
        'The {award}, received in {award_year} for "{book2}", brought the work to a wider public.',
    ),
    (
        "{Pron} often names {influence} as the writer who mattered most in those early years.",
        "Asked about influences, {pron} always mentions {influence} first.",
    ),
    (
        "{Pron} likes to write {writing_time} in {writing_place}, and rarely changes this habit.",
        "The working day is fixed: {pron} writes {writing_time}, in {writing_place}.",
    ),
    (
        "Today {name} lives in {res_city}, {res_country}, and has published {n_books} books so far.",
        "With {n_books} books behind {obj}, {name} now lives and works in {res_city}, {res_country}.",
    ),
    (
        "Readers in many countries return to these pages for their patience, their humour and their sense of place.",
        "New readers keep discovering the books, and younger writers cite them as a model of quiet courage.",
    ),
)


def _author_passage(author: Author, rng: random.Random, n_sentences: int) -> str:
    pronouns = {
        "pron": author["pron"],
        "Pron": author["pron"].capitalize(),
        "obj": "her" if author["pron"] == "she" else "him",
    }
    # Every sentence is drawn, so a shorter passage is the exact start of the full one.
    sentences = [_render(rng.choice(group), author, pronouns) for group in _PASSAGE_SENTENCES]
    return " ".join(sentences[:n_sentences])


# ------------------------------------------------------------------------------ general knowledge


def _general_row(question: str, answer: str, pool: list[str], rng: random.Random) -> Record:
    wrong = rng.sample(sorted({v for v in pool if v != answer}), N_PERTURBED_GENERAL)
    return {"question": question, "answer": answer, "perturbed_answer": wrong}


def _real_authors(rng: random.Random) -> list[Record]:
    names = [a[0] for a in vocab.FAMOUS_AUTHORS]
    nationalities = [a[2] for a in vocab.FAMOUS_AUTHORS]
    rows = []
    for author, book, nationality, _century in vocab.FAMOUS_AUTHORS:
        rows.append(_general_row(f'Who wrote "{book}"?', author, names, rng))
        rows.append(_general_row(f"What nationality is the writer {author}?", nationality, nationalities, rng))
    return rows


def _world_facts(rng: random.Random) -> list[Record]:
    capitals = [c[1] for c in vocab.COUNTRIES]
    continents = [c[4] for c in vocab.COUNTRIES]
    currencies = [c[5] for c in vocab.COUNTRIES]
    rows = []
    for country, capital, _city, _language, continent, currency in vocab.COUNTRIES:
        rows.append(_general_row(f"What is the capital of {country}?", capital, capitals, rng))
        rows.append(_general_row(f"On which continent is {country}?", continent, continents, rng))
        rows.append(_general_row(f"What is the currency of {country}?", currency, currencies, rng))
    return rows


# ------------------------------------------------------------------------------------------- world

_BASE_FIELDS = ("question", "answer", "author", "attribute")


def _base(rows: list[Record]) -> list[Record]:
    return [{k: r[k] for k in _BASE_FIELDS} for r in rows]


def generate_world(config: WorldConfig) -> dict[str, list[Record]]:
    """Every TOFU split of the synthetic world, as lists of records keyed by split name.

    Members are the first `n_authors` authors; forgetXX is the last XX % of them (nested, as in TOFU) and retainYY the
    rest; holdoutXX are authors generated the same way but never trained on; retain_perturbed is the first 10 % of
    authors (disjoint from every forget split).
    """
    n_holdout = split_size(config.n_authors, config.holdout_percent)
    names = _make_names(config.n_authors + n_holdout, random.Random(f"{config.seed}-names"))
    authors = [
        _make_author(first, last, random.Random(f"{config.seed}-author-{i}")) for i, (first, last) in enumerate(names)
    ]
    qa = [_author_qa(a, random.Random(f"{config.seed}-qa-{i}")) for i, a in enumerate(authors)]
    members, holdout = qa[: config.n_authors], qa[config.n_authors :]

    def flat(groups: list[list[Record]]) -> list[Record]:
        return [row for group in groups for row in group]

    splits: dict[str, list[Record]] = {"full": _base(flat(members))}
    for pct in FORGET_PERCENTS:
        k = split_size(config.n_authors, pct)
        if k >= config.n_authors:
            raise ValueError(f"synthetic world: n_authors={config.n_authors} is too small for forget{pct:02d}")
        splits[f"forget{pct:02d}"] = _base(flat(members[-k:]))
        splits[f"forget{pct:02d}_perturbed"] = flat(members[-k:])
        splits[f"retain{100 - pct}"] = _base(flat(members[:-k]))
        splits[f"holdout{pct:02d}"] = flat(holdout[: split_size(config.n_authors, pct)])
    n_retain_eval = min(split_size(config.n_authors, 10), config.n_authors - split_size(config.n_authors, 10))
    splits["retain_perturbed"] = flat(members[:n_retain_eval])

    general_rng = random.Random(f"{config.seed}-general")
    real_authors = _real_authors(general_rng)
    world_facts = _world_facts(general_rng)
    splits["real_authors"] = [{"question": r["question"], "answer": r["answer"]} for r in real_authors]
    splits["real_authors_perturbed"] = real_authors
    splits["world_facts"] = [{"question": r["question"], "answer": r["answer"]} for r in world_facts]
    splits["world_facts_perturbed"] = world_facts

    splits["passages"] = [
        {
            "author": a["name"],
            "text": _author_passage(a, random.Random(f"{config.seed}-passage-{i}"), config.passage_sentences),
        }
        for i, a in enumerate(authors)
    ]
    return splits
