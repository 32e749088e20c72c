"""A save that dies half-way leaves no version behind: the next run loads the previous complete one (issue 13).

Kedro loads the latest version of a dataset by globbing `<filepath>/*/<name>`; a partial `<version>/<name>` left by
a killed or failed save used to be taken for the latest, and the run failed minutes later.
"""

from __future__ import annotations

import errno
import inspect
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from kedro.io import DataCatalog, DatasetError, Version
from kedro.utils import load_obj

import flat_pipeline.io as atomic_io
from flat_pipeline.io import HFModelDataset
from flat_pipeline.io.atomic import PARTIAL_MARK, partial_name
from flat_pipeline.models.loading import load_causal_lm

SRC = Path(__file__).resolve().parents[2] / "src"
V1, V2, V3 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z", "2026-01-03T00.00.00.000Z"


def file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones included), by relative path."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if PARTIAL_MARK in path.name or ".replaced-" in path.name]


def run_child(script: str, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-c", script, *args], env=env, stdout=output, stderr=output)


# ------------------------------------------------------------------------------------------------- a model save killed

KILLED_MID_SAVE = """
import sys, time
from pathlib import Path
from kedro.io import Version
from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import load_causal_lm

model_dir, filepath, version, marker = sys.argv[1:]
bundle = load_causal_lm(model_dir)

def save_slowly(*args, **kwargs):  # the weights are on disk by now; the kill lands before the tokenizer is
    Path(marker).touch()
    time.sleep(120)

bundle.tokenizer.save_pretrained = save_slowly
HFModelDataset(filepath=filepath, version=Version(None, version)).save(bundle)
"""


def test_a_model_save_killed_midway_leaves_the_previous_version_the_latest(tiny_model_dir, tmp_path):
    filepath = tmp_path / "unlearned_model"
    bundle = load_causal_lm(str(tiny_model_dir))
    HFModelDataset(filepath=str(filepath), version=Version(None, V1)).save(bundle)
    first_version = file_bytes(filepath / V1)

    marker, log = tmp_path / "in_tokenizer_save", tmp_path / "child.log"
    child = run_child(KILLED_MID_SAVE, str(tiny_model_dir), str(filepath), V2, str(marker), log=log)
    deadline = time.monotonic() + 120
    while not marker.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"the saving process never reached the tokenizer save:\n{log.read_text()}")
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL

    latest = HFModelDataset(filepath=str(filepath), version=Version(None, None))  # as the catalog makes it
    assert latest.resolve_load_version() == V1
    reloaded = latest.load()
    assert reloaded.tokenizer.get_vocab() == bundle.tokenizer.get_vocab()
    assert file_bytes(filepath / V1) == first_version
    assert not (filepath / V2 / "unlearned_model").exists()
    # what the kill left: the weights, in a hidden folder that Kedro's version lookup does not match
    (partial,) = leftovers(filepath)
    assert partial.parent == filepath / V2 and (partial / "model.safetensors").is_file()

    HFModelDataset(filepath=str(filepath), version=Version(None, V3)).save(bundle)  # the next run saves as usual
    assert HFModelDataset(filepath=str(filepath), version=Version(None, None)).resolve_load_version() == V3
    assert not leftovers(filepath) and not (filepath / V2).exists()  # its first save swept what the kill left


def test_a_model_version_without_weights_is_skipped_on_load_with_a_warning(tiny_model_dir, tmp_path, caplog):
    """Saves from before atomic saves, killed after config.json and the tokenizer but before (all) the weights."""
    import shutil

    filepath = tmp_path / "original_model"
    bundle = load_causal_lm(str(tiny_model_dir))
    HFModelDataset(filepath=str(filepath), version=Version(None, V1)).save(bundle)
    no_weights = filepath / V2 / "original_model"
    shutil.copytree(filepath / V1 / "original_model", no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    some_shards = filepath / V3 / "original_model"  # a sharded save killed after its first shard
    shutil.copytree(no_weights, some_shards)
    shutil.copy(
        filepath / V1 / "original_model" / "model.safetensors", some_shards / "model-00001-of-00002.safetensors"
    )
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (some_shards / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    latest = HFModelDataset(filepath=str(filepath), version=Version(None, None))
    with caplog.at_level(logging.WARNING, logger="flat_pipeline.io.model_dataset"):
        assert latest.resolve_load_version() == V1
    warned = "\n".join(caplog.messages)
    assert f"{no_weights}: no model weights" in warned and f"{some_shards}: no model weights" in warned
    assert latest.load().tokenizer.get_vocab() == bundle.tokenizer.get_vocab()


def test_the_first_save_sweeps_partials_whose_writer_is_gone_and_keeps_those_still_written(
    tmp_path, caplog, monkeypatch
):
    """Two runs may save the same dataset at once: a hidden copy is removed only when the process named in it has
    ended on this machine, or, where that cannot be asked (another machine, a name from before the process was in
    it), when nothing in it changed for a day."""
    from flat_pipeline.io import atomic

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    root, name, this_pid = tmp_path / "summary.json", "summary.json", os.getpid()
    day, version = 24 * 3600, iter(f"2026-01-0{day}T00.00.00.000Z" for day in range(2, 10))

    def partial(pid: int | None = None, host: str | None = None, age_s: float = 0) -> Path:
        with monkeypatch.context() as patch:
            patch.setattr(atomic.os, "getpid", lambda: pid if pid is not None else this_pid)
            patch.setattr(atomic, "HOST", host or getattr(atomic, "HOST", ""), raising=False)
            path = root / next(version) / (partial_name(name) if pid or host else f".{name}{PARTIAL_MARK}0123abcd")
        path.parent.mkdir(parents=True)
        path.write_text('{"forget_quality": 0.')
        os.utime(path, (time.time() - age_s, time.time() - age_s))
        return path

    try:
        killed = partial(pid=int(ended.stdout))
        other_run = partial(pid=running.pid)
        this_process = partial(pid=this_pid)  # a save in progress on another thread
        other_machine, other_machine_old = partial(host="node7"), partial(host="node7", age_s=2 * day)
        before_pids, before_pids_old = partial(), partial(age_s=2 * day)
        with caplog.at_level(logging.INFO, logger="flat_pipeline.io.atomic"):
            dataset = make("JSONDataset", tmp_path, Version(None, V1))
            dataset.save({"forget_quality": 0.5})
    finally:
        running.kill()
        running.wait()
    swept = (killed, other_machine_old, before_pids_old)
    assert [path for path in swept if path.exists()] == []
    assert not killed.parent.exists()  # the version folder it left empty too
    assert all(path.exists() for path in (other_run, this_process, other_machine, before_pids))
    assert all(any(str(path) in message for message in caplog.messages) for path in swept), caplog.messages
    assert make("JSONDataset", tmp_path, Version(None, None)).load() == {"forget_quality": 0.5}

    # unversioned: the hidden copies lie beside the file
    with monkeypatch.context() as patch:
        patch.setattr(atomic.os, "getpid", lambda: int(ended.stdout))
        beside = tmp_path / "plain" / partial_name("leaderboard.md")
    beside.parent.mkdir()
    beside.write_text("| method |")
    make("TextDataset", tmp_path / "plain", None).save("| method | run |")
    assert sorted(path.name for path in beside.parent.iterdir()) == ["leaderboard.md"]


# ------------------------------------------------------------------------------------------- a model save out of space

FILE_SIZE_LIMITED_SAVE = """
import resource, signal, sys
from kedro.io import Version
from flat_pipeline.io import HFModelDataset
from flat_pipeline.models.loading import load_causal_lm

model_dir, filepath, version, limit = sys.argv[1:]
bundle = load_causal_lm(model_dir)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), resource.RLIM_INFINITY))
HFModelDataset(filepath=filepath, version=Version(None, version)).save(bundle)
"""


@contextmanager
def small_tmpfs(mount_point: Path, size_bytes: int) -> Iterator[None]:
    mount_point.mkdir()
    size_kib = -(-size_bytes // 4096) * 4
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(mount_point)]
    if os.geteuid() != 0 or subprocess.run(mount, check=False, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE case covers the same failure)")
    try:
        yield
    finally:
        # lazily if busy: a file of the model loaded from it may still be memory-mapped
        if subprocess.run(["umount", str(mount_point)], check=False, capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def on_disk(folder: Path) -> int:
    """Bytes the files of `folder` take on a page-granular filesystem."""
    return sum(-(-path.stat().st_size // 4096) * 4096 for path in folder.iterdir() if path.is_file())


@pytest.mark.parametrize("limit", ["full tmpfs", "RLIMIT_FSIZE"])
def test_a_model_save_that_runs_out_of_space_fails_and_leaves_no_version(limit, tiny_model_dir, tmp_path):
    disk = tmp_path / "disk"
    bundle = load_causal_lm(str(tiny_model_dir))
    # room for one model and half of a second one
    fits_one_model = small_tmpfs(disk, on_disk(tiny_model_dir) * 3 // 2) if limit == "full tmpfs" else nullcontext()
    with fits_one_model:
        filepath = disk / "unlearned_model"
        HFModelDataset(filepath=str(filepath), version=Version(None, V1)).save(bundle)
        before = file_bytes(filepath)

        if limit == "full tmpfs":
            with pytest.raises(DatasetError) as failure:
                HFModelDataset(filepath=str(filepath), version=Version(None, V2)).save(bundle)
            message, expected = str(failure.value), "No space left on device"
        else:  # any file past 64 KiB (the weights are ~200 KiB) fails to write with EFBIG
            log = tmp_path / "child.log"
            child = run_child(FILE_SIZE_LIMITED_SAVE, str(tiny_model_dir), str(filepath), V2, str(64 * 1024), log=log)
            assert child.wait(timeout=120) == 1
            message, expected = log.read_text(), "File too large"
        assert "Failed while saving data to dataset" in message and "HFModelDataset" in message
        assert expected in message

        assert not (filepath / V2).exists()  # no final name, no hidden copy, no empty version folder
        assert file_bytes(filepath) == before
        latest = HFModelDataset(filepath=str(filepath), version=Version(None, None))
        assert latest.resolve_load_version() == V1
        assert latest.load().tokenizer.get_vocab() == bundle.tokenizer.get_vocab()


def test_an_unversioned_model_folder_is_replaced_whole_or_not_at_all(tiny_model_dir, tmp_path):
    folder = tmp_path / "external_model"
    bundle = load_causal_lm(str(tiny_model_dir))
    dataset = HFModelDataset(filepath=str(folder))
    dataset.save(bundle)
    (folder / "stale.txt").write_text("from an earlier save")
    dataset.save(bundle)
    assert not (folder / "stale.txt").exists() and (folder / "tokenizer.json").is_file()
    before = file_bytes(folder)

    def fail(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    bundle.tokenizer.save_pretrained = fail
    with pytest.raises(DatasetError, match="No space left on device"):
        dataset.save(bundle)
    assert file_bytes(folder) == before and not leftovers(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["external_model"]


# ------------------------------------------------------------------------------------------------ kedro-datasets types


# Each makes the data of run `n`: a later run's data differs from an earlier one's.


def figure(n: int) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(figsize=(1, 1))
    axes.plot([0, 1], [n, 0])
    return fig


def table(n: int) -> Any:
    import pandas as pd

    return pd.DataFrame({"method": ["flat", "npo"], "forget_quality": [0.5 / n, 0.25 / n]})


def dataset_dict(n: int) -> Any:
    from datasets import Dataset, DatasetDict

    return DatasetDict({"first": Dataset.from_dict({"q": ["a", "b"]}), "second": Dataset.from_dict({"q": [str(n)]})})


# type name: path argument, file or folder name, data of run n, a comparable form of what loads back
CASES: dict[str, tuple[str, str, Callable[[int], Any], Callable[[Any], Any] | None]] = {
    "ArrowDataset": ("path", "forget_set", dataset_dict, lambda data: {k: v.to_dict() for k, v in data.items()}),
    "JSONDataset": ("filepath", "summary.json", lambda n: {"forget_quality": 0.5 / n}, lambda data: data),
    "ParquetDataset": ("filepath", "items.parquet", table, lambda data: data.to_dict()),
    "CSVDataset": ("filepath", "leaderboard.csv", table, lambda data: data.to_dict()),
    "TextDataset": ("filepath", "leaderboard.md", lambda n: f"| method | run |\n| flat | {n} |\n", lambda data: data),
    "MatplotlibDataset": ("filepath", "scatter.png", figure, None),  # saves only
}
KEDRO_TYPES = {  # what the catalog named before
    "ArrowDataset": "huggingface.ArrowDataset",
    "JSONDataset": "json.JSONDataset",
    "ParquetDataset": "pandas.ParquetDataset",
    "CSVDataset": "pandas.CSVDataset",
    "TextDataset": "text.TextDataset",
    "MatplotlibDataset": "matplotlib.MatplotlibDataset",
}


def make(type_name: str, folder: Path, version: Version | None, **kwargs: Any) -> Any:
    path_argument, name, _, _ = CASES[type_name]
    return getattr(atomic_io, type_name)(**{path_argument: str(folder / name)}, version=version, **kwargs)


@pytest.mark.parametrize("type_name", CASES)
def test_a_failed_save_leaves_no_version_and_latest_is_the_previous_one(type_name, tmp_path, monkeypatch):
    path_argument, name, data, comparable = CASES[type_name]
    root = tmp_path / name
    make(type_name, tmp_path, Version(None, V1)).save(data(1))
    before = file_bytes(root)

    failing = make(type_name, tmp_path, Version(None, V2))

    def fail_after_writing() -> None:  # every one of these saves calls it once its writer has finished
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(failing, "_invalidate_cache", fail_after_writing)
    expected = f"(?s)Failed while saving data to dataset .*{type_name}.*Input/output error"
    with pytest.raises(DatasetError, match=expected):
        failing.save(data(2))
    assert not (root / V2).exists()
    assert file_bytes(root) == before

    # a newer save killed outright leaves its hidden copy: Kedro's (fsspec) glob must not take it for a version
    killed = root / V3 / partial_name(name)
    killed.parent.mkdir()
    if (root / V1 / name).is_file():
        killed.write_bytes((root / V1 / name).read_bytes())
    else:
        killed.mkdir()
    latest = make(type_name, tmp_path, Version(None, None))
    assert latest.resolve_load_version() == V1 and latest.list_versions(full_path=False) == [V1]
    if comparable is not None:
        assert comparable(latest.load()) == comparable(data(1))


@pytest.mark.parametrize("type_name", CASES)
def test_an_unversioned_save_replaces_the_previous_one_only_when_it_succeeds(type_name, tmp_path, monkeypatch):
    _, name, data, comparable = CASES[type_name]
    make(type_name, tmp_path, None).save(data(1))
    before = file_bytes(tmp_path)
    failing = make(type_name, tmp_path, None)

    def fail_after_writing() -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(failing, "_invalidate_cache", fail_after_writing)
    with pytest.raises(DatasetError, match="Input/output error"):
        failing.save(data(2))
    assert file_bytes(tmp_path) == before and sorted(path.name for path in tmp_path.iterdir()) == [name]

    make(type_name, tmp_path, None).save(data(3))
    assert file_bytes(tmp_path) != before and sorted(path.name for path in tmp_path.iterdir()) == [name]
    if comparable is not None:
        assert comparable(make(type_name, tmp_path, None).load()) == comparable(data(3))


def test_a_json_save_interrupted_mid_write_leaves_nothing(tmp_path):
    make("JSONDataset", tmp_path, Version(None, V1)).save({"forget_quality": 0.5})
    before = file_bytes(tmp_path)
    half_written = {"forget_quality": 0.25, "model": object()}  # json.dump has written the first key when it fails
    with pytest.raises(DatasetError, match="not JSON serializable"):
        make("JSONDataset", tmp_path, Version(None, V2)).save(half_written)

    def interrupt(value: Any) -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: Kedro does not wrap it, we clean up all the same
        make("JSONDataset", tmp_path, Version(None, V2), save_args={"default": interrupt}).save(half_written)
    assert file_bytes(tmp_path) == before and not (tmp_path / "summary.json" / V2).exists()
    assert make("JSONDataset", tmp_path, Version(None, None)).load() == {"forget_quality": 0.5}


def test_an_arrow_save_failing_in_its_second_split_leaves_nothing(tmp_path, monkeypatch):
    from datasets import Dataset

    make("ArrowDataset", tmp_path, Version(None, V1)).save(dataset_dict(1))
    before = file_bytes(tmp_path)
    save_split = Dataset.save_to_disk

    def second_split_runs_out_of_space(self: Dataset, path: str, *args: Any, **kwargs: Any) -> None:
        if path.endswith("second"):
            raise OSError(errno.ENOSPC, "No space left on device")
        save_split(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", second_split_runs_out_of_space)
    with pytest.raises(DatasetError, match="No space left on device"):
        make("ArrowDataset", tmp_path, Version(None, V2)).save(dataset_dict(2))
    assert file_bytes(tmp_path) == before and not (tmp_path / "forget_set" / V2).exists()
    assert make("ArrowDataset", tmp_path, Version(None, None)).load()["second"]["q"] == ["1"]


# ---------------------------------------------------------------------------------------------- same as kedro-datasets


# Parameters our types add to kedro-datasets' (JSONDataset: load None where no version is saved), at their defaults
OUR_OWN_PARAMETERS = {"JSONDataset": {"missing_ok": False}}


@pytest.mark.parametrize("type_name", CASES)
def test_the_atomic_types_describe_and_configure_as_kedro_datasets_does(type_name, tmp_path):
    path_argument, name, data, _ = CASES[type_name]
    ours = make(type_name, tmp_path, Version(None, None), metadata={"kind": "report"})
    theirs = load_obj(f"kedro_datasets.{KEDRO_TYPES[type_name]}")(
        **{path_argument: str(tmp_path / name)}, version=Version(None, None), metadata={"kind": "report"}
    )
    assert ours._describe() == theirs._describe()
    # what `catalog.to_config()` reports: every parameter by name, as Kedro records it for kedro-datasets' types
    # that define their own __init__ (huggingface.ArrowDataset inherits one, and Kedro records {"args", "kwargs"})
    parameters = inspect.signature(inspect.unwrap(type(theirs).__init__)).parameters
    expected = {name: parameter.default for name, parameter in parameters.items() if name not in {"self", "metadata"}}
    expected = {**expected, path_argument: str(tmp_path / name), "versioned": True}
    del expected["version"]
    ours_config, theirs_config = ours._init_config(), theirs._init_config()
    assert ours_config.pop("type") == f"flat_pipeline.io.atomic_datasets.{type_name}"
    assert ours_config == {**expected, **OUR_OWN_PARAMETERS.get(type_name, {})}
    if type_name != "ArrowDataset":
        assert {key: value for key, value in theirs_config.items() if key != "type"} == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Kedro warns when the version saved is not the one it then finds
        ours.save(data(1))
    assert ours.exists()


def test_the_catalog_builds_them_from_flat_pipeline_io(tmp_path):
    catalog = DataCatalog.from_config(
        {
            "summary": {
                "type": "flat_pipeline.io.JSONDataset",
                "filepath": str(tmp_path / "s.json"),
                "versioned": True,
            },
            "table": {"type": "flat_pipeline.io.CSVDataset", "filepath": str(tmp_path / "t.csv"), "versioned": True},
        }
    )
    catalog.save("summary", {"forget_quality": 0.5})
    assert catalog.load("summary") == {"forget_quality": 0.5}
    assert type(catalog.get("table")).__name__ == "CSVDataset"
    assert len(list((tmp_path / "s.json").glob("*/s.json"))) == 1
