"""Benchmark sources: the synthetic world or files in the real formats, read and validated into named splits.

Formats (shared/spec/benchmarks-and-metrics.md §2-3, flat.md §3.1):
- `tofu`: TOFU's splits (`forget10.json`, `retain90.jsonl`, `forget10_perturbed.parquet`, `forget10/train-*.parquet`,
  a `save_to_disk` folder of a Dataset or a DatasetDict, ...);
- `hp`: FLAT's Harry Potter jsonl files (`hp_qa.jsonl` with `prompt`/`response` is the forget set; `hp.jsonl` with
  `text` the pretraining text; `hp_{train,test}_qa_{k}.jsonl` the completion evaluation sets; `hp_qa_{k}.jsonl`,
  also in FLAT's folder, load as splits `hp_qa_{k}`);
- `muse`: MUSE-News/Books folders (`verbmem/forget`, `knowmem/{forget,retain}_qa[_icl]`, `privleak/*`, `raw/*`),
  from the hub (JSON, parquet shards) or from MUSE's GitHub repository, whose raw corpus is plain text
  (`raw/forget.txt`, `raw/retain1.txt`, ...).

MUSE's raw `.txt` files: the spec does not say how documents are delimited in them, and MUSE's own training code
reads each file whole as one token stream, which it cuts into fixed-length pieces. We do the same: one `.txt` file is
one row `{"text": <the whole file>}` of its split, and `data_prep.text_chunks` cuts it into pieces
(flat_pipeline.data.text_chunks). No delimiter is guessed, so no article is split at a paragraph break.

Files that ship with a source but are not splits (TOFU's `idontknow.jsonl`: template answers in plain text) are
skipped with a note of what they are (NON_SPLIT_FILES); other files that look like data but that no reader takes
(`.txt` outside MUSE, `.csv`, `.tsv`) are named in a warning. A source's required files (REQUIRED_FILES) must all be
there.

Every problem is reported with the file, the split and the field (or the line), before any split is returned.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flat_pipeline.data.item_keys import item_key
from flat_pipeline.data.world import FORGET_PERCENTS, WorldConfig, generate_world

logger = logging.getLogger(__name__)

Record = dict[str, Any]
SOURCES = ("synthetic", "tofu", "hp", "muse")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")
# Sources whose `.txt` files are raw text splits, one document per file (see the module docstring).
TEXT_SPLIT_SOURCES = ("muse",)
# Suffixes of files that look like data but that no reader takes: named in a warning rather than skipped unseen.
DATA_LIKE_SUFFIXES = (".txt", ".csv", ".tsv")

# Files that ship with a source's data but hold no split: file name -> what it is (logged when skipped).
NON_SPLIT_FILES: dict[str, dict[str, str]] = {
    "tofu": {
        "idontknow.jsonl": "TOFU's template answers, plain text one a line, not a split; use them with "
        "templates.source=file and templates.file pointing at this file",
    },
    "hp": {
        "Harry_Potter_all_char_separated.txt": "the books as one text file in FLAT's data/hp, not a split; "
        "the book text the models finetune on is hp.jsonl",
    },
}

# Files a source cannot run without: file name -> what it is for. HP: FLAT's recipe finetunes the original model on
# the forget QA and the book text and the retain model on the book text alone (without hp.jsonl its training set
# is empty), and FLAT's HP evaluation is the completion of hp_test_qa_200 (flat.md §3.1, §3.4; conf/hp).
REQUIRED_FILES: dict[str, dict[str, str]] = {
    "hp": {
        "hp_qa.jsonl": "the forget set",
        "hp.jsonl": "the book text both models finetune on",
        "hp_test_qa_200.jsonl": "FLAT's completion evaluation set",
    },
}
# Fields that must hold text: an empty (or blank) one would train or score on nothing.
NON_EMPTY_FIELDS = ("question", "answer", "prompt", "response", "text")
# Fields that identify a forget item; the same one twice would be forgotten twice as hard.
FORGET_ITEM_FIELDS = ("question", "prompt", "text")


class DataValidationError(ValueError):
    """Input data does not match the expected format; the message names the file, split and field."""


@dataclass(frozen=True)
class SplitSchema:
    """Required fields of the splits whose names match `pattern`: field -> "str" or "list[str]"."""

    pattern: str
    fields: Mapping[str, str]


_QA = {"question": "str", "answer": "str"}
_QA_PERTURBED = {**_QA, "paraphrased_answer": "str", "perturbed_answer": "list[str]"}
_QA_GENERAL_PERTURBED = {**_QA, "perturbed_answer": "list[str]"}
_TEXT = {"text": "str"}
_PROMPT_RESPONSE = {"prompt": "str", "response": "str"}

SCHEMAS: dict[str, tuple[SplitSchema, ...]] = {
    "tofu": (
        SplitSchema(r"(forget\d\d|retain)_perturbed", _QA_PERTURBED),
        SplitSchema(r"(real_authors|world_facts)_perturbed", _QA_GENERAL_PERTURBED),
        SplitSchema(r"full|forget\d\d|retain\d\d|holdout\d\d|real_authors|world_facts", _QA),
        SplitSchema(r"passages", {"author": "str", "text": "str"}),
    ),
    "hp": (
        # hp_qa_{k}: FLAT's data/hp ships them beside hp_qa.jsonl (in the format of hp_qa, it is assumed: the spec
        # never saw their contents); they load as splits of their own, which no default role reads
        SplitSchema(r"forget|retain|hp_((train|test)_)?qa_\d+", _PROMPT_RESPONSE),
        SplitSchema(r"text", _TEXT),
    ),
    "muse": (
        SplitSchema(r"verbmem_forget", {"prompt": "str", "gt": "str"}),
        SplitSchema(r"knowmem_(forget|retain)_qa(_icl)?", _QA),
        SplitSchema(r"(privleak|raw|scal|sust|train)_\w+", _TEXT),
    ),
}
SCHEMAS["synthetic"] = SCHEMAS["tofu"]

# File stems renamed on load, so that every source ends up with the split names used in SCHEMAS.
_RENAMES = {"hp": {"hp_qa": "forget", "hp": "text"}}


def _schema_for(source: str, split: str) -> SplitSchema | None:
    return next((s for s in SCHEMAS[source] if re.fullmatch(s.pattern, split)), None)


def validate_split(source: str, split: str, rows: list[Record], origin: str) -> None:
    """Raise DataValidationError if `rows` is empty, or misses a field, or has a field of the wrong type."""
    schema = _schema_for(source, split)
    if schema is None:
        known = ", ".join(s.pattern for s in SCHEMAS[source])
        raise DataValidationError(f"{origin}: unknown split '{split}' for source '{source}'; expected one of: {known}")
    if not rows:
        raise DataValidationError(f"{origin}: split '{split}' is empty")
    for i, row in enumerate(rows):
        for field, kind in schema.fields.items():
            if field not in row or row[field] is None:
                raise DataValidationError(
                    f"{origin}: split '{split}', row {i}: missing field '{field}' (expected {kind})"
                )
            value = row[field]
            if kind == "str" and not isinstance(value, str):
                raise DataValidationError(
                    f"{origin}: split '{split}', row {i}, field '{field}': expected str, got {type(value).__name__}"
                )
            if kind == "list[str]" and not (
                isinstance(value, list) and value and all(isinstance(v, str) for v in value)
            ):
                raise DataValidationError(
                    f"{origin}: split '{split}', row {i}, field '{field}': expected a non-empty list of str, "
                    f"got {value!r:.80}"
                )
    _check_not_empty(split, rows, schema, origin)


def _check_not_empty(split: str, rows: list[Record], schema: SplitSchema, origin: str) -> None:
    for field in schema.fields:
        if field not in NON_EMPTY_FIELDS:
            continue
        empty = [i for i, row in enumerate(rows) if not row[field].strip()]
        if empty:
            raise DataValidationError(
                f"{origin}: split '{split}', row {empty[0]}, field '{field}': expected a non-empty str, got "
                f"{rows[empty[0]][field]!r} ({len(empty)} row(s) of the split have an empty '{field}')"
            )


# --------------------------------------------------------------------------------------- file reading


def _json_kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _read_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are reported with their line (a BOM is allowed)."""
    data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark is no content
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - data.rfind(b"\n", 0, err.start)
        raise DataValidationError(
            f"{path}, line {line}: expected UTF-8 text, got the byte 0x{data[err.start]:02x} "
            f"(byte {column} of the line)"
        ) from err


def _element_line(text: str, index: int) -> int:
    """The line on which element `index` of the JSON array `text` (known to be valid) starts."""
    decoder = json.JSONDecoder()
    position, start = text.index("[") + 1, 0
    for _ in range(index + 1):
        while text[position] in " \t\r\n,":
            position += 1
        start = position
        _, position = decoder.raw_decode(text, position)
    return text.count("\n", 0, start) + 1


def _json_records(path: Path, text: str, data: list[Any]) -> list[Record]:
    for i, element in enumerate(data):
        if not isinstance(element, dict):
            raise DataValidationError(
                f"{path}, line {_element_line(text, i)}: element {i} of the JSON list: expected a JSON object, "
                f"got {_json_kind(element)}"
            )
    return data


def _json_lines(path: Path, text: str) -> list[Record]:
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataValidationError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from err
        if not isinstance(row, dict):
            raise DataValidationError(f"{path}, line {line_no}: expected a JSON object per line, got {_json_kind(row)}")
        rows.append(row)
    return rows


def _read_json(path: Path) -> list[Record]:
    text = _read_text(path)
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # not one JSON document: read it as JSON lines (TOFU's .json files are)
        if isinstance(data, list):
            return _json_records(path, text, data)
        if isinstance(data, dict):
            columns = list(data.values())
            if not all(isinstance(c, list) for c in columns):
                return [data]  # JSON lines with a single line
            if columns and all(len(c) == len(columns[0]) for c in columns):
                return [dict(zip(data, values, strict=True)) for values in zip(*columns, strict=True)]
            raise DataValidationError(
                f"{path}: expected a list of records, JSON lines or columns of equal length, got a JSON object of "
                f"columns of lengths {[len(c) for c in columns]}"
            )
    return _json_lines(path, text)


def _read_plain_text(path: Path) -> list[Record]:
    """A raw text split: the whole file is one document (see the module docstring); a blank file has none."""
    text = _read_text(path).strip()
    return [{"text": text}] if text else []


def _read_records(path: Path) -> list[Record]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix == ".txt":
        return _read_plain_text(path)
    return _read_json(path)


def _read_saved(path: Path) -> dict[str, list[Record]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return {name: ds.to_list() for name, ds in loaded.items()}
    return {path.name: loaded.to_list()}


def _split_name(relative: Path) -> str:
    """`knowmem/forget_qa.json` -> `knowmem_forget_qa`; `forget10/train-00000-of-00001.parquet` -> `forget10`."""
    parts = [*relative.parent.parts, re.sub(r"-\d{5}-of-\d{5}$", "", relative.stem)]
    if len(parts) > 1 and parts[-1] == "train":
        parts = parts[:-1]
    return "_".join(parts)


def _split_suffixes(source: str | None) -> tuple[str, ...]:
    return (*DATA_SUFFIXES, ".txt") if source in TEXT_SPLIT_SOURCES else DATA_SUFFIXES


def _is_split_file(file: Path, source: str | None) -> bool:
    """Whether `file` is read as (a shard of) a split; a known non-split file or a data-like one is logged."""
    known = NON_SPLIT_FILES.get(source or "", {}).get(file.name)
    if known:
        logger.info("source '%s': skipping %s: %s", source, file, known)
        return False
    if file.suffix in _split_suffixes(source):
        return True
    if file.suffix in DATA_LIKE_SUFFIXES:
        logger.warning(
            "source '%s': skipping %s: a %s file is not read as a split (splits are %s files)",
            source,
            file,
            file.suffix,
            ", ".join(_split_suffixes(source)),
        )
    return False


def read_split_files(path: str | Path, source: str | None = None) -> dict[str, tuple[list[Record], str]]:
    """Every split under `path` (a data file, or a folder of them, or a `save_to_disk` folder).

    Args:
        path: the file or folder.
        source: the source the files belong to: which of its files are not splits (NON_SPLIT_FILES) and whether
            `.txt` files are raw text splits (TEXT_SPLIT_SOURCES).

    Returns:
        split name -> (records, origin), where origin is the file the split came from.
    """
    root = Path(path)
    if not root.exists():
        raise DataValidationError(f"{root}: no such file or folder")
    if root.is_file():
        return {_split_name(Path(root.name)): (_read_records(root), str(root))}
    if (root / "dataset_dict.json").exists() or (root / "dataset_info.json").exists():
        return {name: (rows, str(root)) for name, rows in _read_saved(root).items()}
    splits: dict[str, tuple[list[Record], str]] = {}
    for file in sorted(root.rglob("*")):
        if file.is_dir() and (file / "dataset_info.json").exists():
            name = _split_name(file.relative_to(root).with_suffix(""))
            splits[name] = (_read_saved(file)[file.name], str(file))
        elif (
            file.is_file()
            and not any((parent / "dataset_info.json").exists() for parent in file.parents)
            and _is_split_file(file, source)
        ):
            name = _split_name(file.relative_to(root))
            rows, _ = splits.get(name, ([], ""))  # shards of one split are concatenated
            splits[name] = (rows + _read_records(file), str(file))
    if not splits:
        raise DataValidationError(
            f"{root}: no data files ({', '.join(_split_suffixes(source))}) or save_to_disk folders found"
        )
    return splits


# ------------------------------------------------------------------------------------------- sources

# Where each source's files come from, for the error that tells an offline user what to fetch.
DOWNLOADS = {
    "tofu": "huggingface-cli download locuslab/TOFU --repo-type dataset --local-dir data/01_raw/tofu",
    "muse": "huggingface-cli download muse-bench/MUSE-News --repo-type dataset --local-dir data/01_raw/muse_news "
    "(or muse-bench/MUSE-Books into data/01_raw/muse_books)",
    "hp": "copy hp_qa.jsonl, hp.jsonl and hp_test_qa_200.jsonl from FLAT's repository (data/hp/) to data/01_raw/hp",
}
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")


def resolve_source_path(source: str, path: str) -> Path:
    """A local file or folder as given, or a hub dataset id downloaded to the local cache when the hub is reachable.

    Raises:
        DataValidationError: neither exists; the message says what to download and where to put it.
    """
    local = Path(path)
    if local.exists():
        return local
    problem = f"parameter data_prep.path: '{path}' is not a local file or folder"
    if _HUB_ID.fullmatch(path):
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=path, repo_type="dataset"))
        except Exception as error:  # offline mode, no network, unknown repo: all end in the same advice
            problem += f", and the hub id could not be fetched ({type(error).__name__})"
    raise DataValidationError(
        f"{problem}. On a machine with internet run `{DOWNLOADS.get(source, 'the download of the data set')}`, "
        f"copy the folder to this project and set data_prep.path to it."
    )


def _check_required_files(source: str, root: Path, split_names: set[str]) -> None:
    """Raise DataValidationError naming every required file of `source` that is not under `root`."""
    renames = _RENAMES.get(source, {})
    missing = [
        f"{name} ({purpose})"
        for name, purpose in REQUIRED_FILES.get(source, {}).items()
        if renames.get(Path(name).stem, Path(name).stem) not in split_names
    ]
    if missing and root.is_file():
        raise DataValidationError(
            f"parameter data_prep.path: source '{source}' reads a folder holding {', '.join(REQUIRED_FILES[source])}, "
            f"got the file {root}"
        )
    if missing:
        raise DataValidationError(
            f"{root}: source '{source}' needs file(s) not found in this folder: {'; '.join(missing)}. "
            f"To get them: {DOWNLOADS[source]}"
        )


def load_source_files(
    source: str, path: str | None = None, synthetic: Mapping[str, Any] | None = None
) -> dict[str, tuple[list[Record], str]]:
    """Named splits of a benchmark source with the file each came from, validated.

    Args:
        source: one of SOURCES.
        path: file or folder holding the source's files (not used by `synthetic`).
        synthetic: keyword arguments of WorldConfig for the synthetic world.

    Returns:
        split name -> (records, origin).
    """
    if source not in SOURCES:
        raise DataValidationError(f"parameter data_prep.source: expected one of {SOURCES}, got '{source}'")
    if source == "synthetic":
        world = generate_world(WorldConfig(**(synthetic or {})))
        for name, rows in world.items():
            validate_split(source, name, rows, "synthetic world")
        return {name: (rows, "synthetic world") for name, rows in world.items()}
    if not path:
        raise DataValidationError(f"parameter data_prep.path: source '{source}' needs a file or folder, got {path!r}")
    root = resolve_source_path(source, path)
    renames = _RENAMES.get(source, {})
    splits = {renames.get(name, name): split for name, split in read_split_files(root, source).items()}
    _check_required_files(source, root, set(splits))
    for name, (rows, origin) in splits.items():
        validate_split(source, name, rows, origin)
    return splits


def load_source(
    source: str, path: str | None = None, synthetic: Mapping[str, Any] | None = None
) -> dict[str, list[Record]]:
    """Named splits of a benchmark source, validated (load_source_files without the origins)."""
    return {name: rows for name, (rows, _) in load_source_files(source, path, synthetic).items()}


@dataclass(frozen=True)
class UnlearningSplits:
    """Names of the splits that play the forget, retain and holdout roles."""

    forget: str
    retain: str | None
    holdout: str | None


def resolve_roles(
    source: str,
    available: list[str],
    forget_split: str,
    retain_split: str | None = None,
    holdout_split: str | None = None,
) -> UnlearningSplits:
    """Which split is forget, retain and holdout; TOFU-shaped sources derive retain/holdout from `forget10` etc.

    For TOFU, `forgetXX` resolves to `forgetXX_perturbed` when present (a superset of its fields).
    """

    def check(param: str, name: str) -> str:
        if name not in available:
            raise DataValidationError(
                f"parameter data_prep.{param}: split '{name}' not found in source '{source}'; "
                f"available: {', '.join(sorted(available))}"
            )
        return name

    tofu_like = source in ("synthetic", "tofu")
    match = re.fullmatch(r"forget(\d\d)", forget_split) if tofu_like else None
    if tofu_like and match is None:
        raise DataValidationError(
            f"parameter data_prep.forget_split: expected one of "
            f"{', '.join(f'forget{p:02d}' for p in FORGET_PERCENTS)} for source '{source}', got '{forget_split}'"
        )
    if match:
        pct = int(match.group(1))
        forget = f"{forget_split}_perturbed" if f"{forget_split}_perturbed" in available else forget_split
        retain_split = retain_split or f"retain{100 - pct}"
        default_holdout = f"holdout{pct:02d}"
        if holdout_split is None and default_holdout in available:
            holdout_split = default_holdout
    else:
        forget = forget_split
    return UnlearningSplits(
        forget=check("forget_split", forget),
        retain=check("retain_split", retain_split) if retain_split else None,
        holdout=check("holdout_split", holdout_split) if holdout_split else None,
    )


def check_disjoint(
    forget: list[Record],
    retain: list[Record] | None,
    names: UnlearningSplits,
    holdout: list[Record] | None = None,
) -> None:
    """Forget items must be in neither the retain nor the holdout split (nor share an author, where rows name one).

    The holdout split is the membership attacks' never-seen side: a forget item there is scored as a non-member.
    """
    if retain is not None:
        _check_no_shared_items(forget, retain, f"splits '{names.forget}' and '{names.retain}' overlap")
    if holdout is not None:
        _check_no_shared_items(
            forget,
            holdout,
            f"splits '{names.forget}' and '{names.holdout}' overlap",
            "; the holdout split must hold items no model trained on (the membership attacks' non-members)",
        )


def _check_no_shared_items(forget: list[Record], other: list[Record], problem: str, why: str = "") -> None:
    """Items of two splits compared by `item_key` (NFC, whitespace, case): a forget question with a trailing space in
    the holdout split is still shared."""

    def keys(rows: list[Record], field: str) -> dict[str, str]:
        return {item_key(r[field]): r[field] for r in rows if isinstance(r.get(field), str)}

    for field in ("author", "question", "prompt", "text"):
        theirs = keys(other, field)
        shared = keys(forget, field).keys() & theirs.keys()
        if shared:
            example = theirs[sorted(shared)[0]]
            raise DataValidationError(
                f"{problem}: {len(shared)} shared value(s) of field '{field}', e.g. {example!r:.100}{why}"
            )


def check_forget_items_unique(forget: list[Record], split: str, origin: str) -> None:
    """Each forget item once, compared by `item_key` (NFC, whitespace, case): a repeated question (prompt, text)
    would be unlearned twice as hard as the others."""
    for field in FORGET_ITEM_FIELDS:
        keys = [item_key(row[field]) if isinstance(row.get(field), str) else None for row in forget]
        counts = Counter(key for key in keys if key is not None)
        repeated = [key for key, count in counts.items() if count > 1]
        if repeated:
            first, second = [i for i, key in enumerate(keys) if key == repeated[0]][:2]
            example = forget[first][field]
            raise DataValidationError(
                f"{origin}: split '{split}', field '{field}': expected each forget item once, got {len(repeated)} "
                f"value(s) repeated, e.g. {example!r:.100} in rows {first} and {second}"
            )


def check_roles(splits: Mapping[str, tuple[list[Record], str]], roles: UnlearningSplits) -> None:
    """The forget split holds each item once, and none of its items is in the retain or the holdout split."""
    forget, origin = splits[roles.forget]
    check_forget_items_unique(forget, roles.forget, origin)

    def rows(name: str | None) -> list[Record] | None:
        return splits[name][0] if name else None

    check_disjoint(forget, rows(roles.retain), roles, rows(roles.holdout))
