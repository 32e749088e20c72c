"""Benchmark sources: the synthetic world or files in the real formats, read and validated into named splits.

Formats (shared/spec/benchmarks-and-metrics.md §2-3, flat.md §3.1):
- `tofu`: TOFU's splits (`forget10.json`, `retain90.jsonl`, `forget10_perturbed.parquet`, `forget10/train-*.parquet`,
  a `save_to_disk` folder of a Dataset or a DatasetDict, ...);
- `hp`: FLAT's Harry Potter jsonl files (`hp_qa.jsonl` with `prompt`/`response` is the forget set; `hp.jsonl` with
  `text` the pretraining text; `hp_{train,test}_qa_{k}.jsonl` the completion evaluation sets);
- `muse`: MUSE-News/Books folders (`verbmem/forget`, `knowmem/{forget,retain}_qa[_icl]`, `privleak/*`, `raw/*`).

Every problem is reported with the file, the split and the field, before any split is returned.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flat_pipeline.data.world import FORGET_PERCENTS, WorldConfig, generate_world

Record = dict[str, Any]
SOURCES = ("synthetic", "tofu", "hp", "muse")
DATA_SUFFIXES = (".json", ".jsonl", ".parquet")


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
        SplitSchema(r"forget|retain|hp_(train|test)_qa_\d+", _PROMPT_RESPONSE),
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


# --------------------------------------------------------------------------------------- file reading


def _read_json(path: Path) -> list[Record]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # not one JSON document: read it as JSON lines (TOFU's .json files are)
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            columns = list(data.values())
            if columns and all(isinstance(c, list) and len(c) == len(columns[0]) for c in columns):
                return [dict(zip(data, values, strict=True)) for values in zip(*columns, strict=True)]
            raise DataValidationError(f"{path}: expected a list of records or JSON lines, got a JSON object")
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataValidationError(f"{path}, line {line_no}: not valid JSON ({err.msg})") from err
    return rows


def _read_records(path: Path) -> list[Record]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
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


def read_split_files(path: str | Path) -> dict[str, tuple[list[Record], str]]:
    """Every split under `path` (a data file, or a folder of them, or a `save_to_disk` folder).

    Returns split name -> (records, origin), where origin is the file the split came from.
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
        elif file.suffix in DATA_SUFFIXES and not any(
            (parent / "dataset_info.json").exists() for parent in file.parents
        ):
            name = _split_name(file.relative_to(root))
            rows, _ = splits.get(name, ([], ""))  # shards of one split are concatenated
            splits[name] = (rows + _read_records(file), str(file))
    if not splits:
        raise DataValidationError(f"{root}: no data files ({', '.join(DATA_SUFFIXES)}) or save_to_disk folders found")
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


def load_source(
    source: str, path: str | None = None, synthetic: Mapping[str, Any] | None = None
) -> dict[str, list[Record]]:
    """Named splits of a benchmark source, validated.

    Args:
        source: one of SOURCES.
        path: file or folder holding the source's files (not used by `synthetic`).
        synthetic: keyword arguments of WorldConfig for the synthetic world.
    """
    if source not in SOURCES:
        raise DataValidationError(f"parameter data_prep.source: expected one of {SOURCES}, got '{source}'")
    if source == "synthetic":
        world = generate_world(WorldConfig(**(synthetic or {})))
        for name, rows in world.items():
            validate_split(source, name, rows, "synthetic world")
        return world
    if not path:
        raise DataValidationError(f"parameter data_prep.path: source '{source}' needs a file or folder, got {path!r}")
    renames = _RENAMES.get(source, {})
    splits = {}
    for file_name, (rows, origin) in read_split_files(resolve_source_path(source, path)).items():
        name = renames.get(file_name, file_name)
        validate_split(source, name, rows, origin)
        splits[name] = rows
    return splits


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


def check_disjoint(forget: list[Record], retain: list[Record], names: UnlearningSplits) -> None:
    """Forget and retain must not share an item (nor an author, where rows name one)."""

    def keys(rows: list[Record], field: str) -> set[str]:
        return {r[field] for r in rows if field in r}

    for field in ("author", "question", "prompt", "text"):
        shared = keys(forget, field) & keys(retain, field)
        if shared:
            example = sorted(shared)[0]
            raise DataValidationError(
                f"splits '{names.forget}' and '{names.retain}' overlap: {len(shared)} shared value(s) of field "
                f"'{field}', e.g. {example!r:.100}"
            )
