"""The benchmark's raw files as a catalog input, so that the lineage starts where the data does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from kedro_datasets._typing import TablePreview

from .previews import table_preview


class BenchmarkSourceDataset(AbstractDataset[None, "str | None"]):
    """Where data_prep reads the benchmark from: a local file or folder, a hub dataset id, or nothing (`path: null`)
    for the synthetic world, which has no files.

    Loading returns the location as configured; data_prep's `load_benchmark` reads, downloads (a hub id) and
    validates the files, so that a missing folder is reported there, before anything is written, with what to
    download. Read-only: the files are the benchmark's, never the pipeline's.

    The argument is `location`, not `path`: Kedro makes a catalog `path` absolute, which would turn a hub id into a
    folder that does not exist; a relative location is read from the working directory (the project root).

    Example catalog entry::

        benchmark_source:
          type: flat_pipeline.io.BenchmarkSourceDataset
          location: data/01_raw/tofu     # or locuslab/TOFU; null: the synthetic world
    """

    def __init__(self, *, location: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._path = str(location) if location is not None else None
        self.metadata = metadata

    def load(self) -> str | None:
        return self._path

    def save(self, data: Any) -> None:
        raise DatasetError(f"benchmark_source ({self._path}) is read-only: the benchmark's files are never written")

    def _exists(self) -> bool:
        # False for a hub id too: whether the hub has it only data_prep finds out, when it fetches it
        return self._path is None or Path(self._path).exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}

    def preview(self, nfiles: int = 30) -> TablePreview:
        """kedro-viz's view: the source's files (up to `nfiles`) and their sizes, without reading them."""
        columns = ("file", "size")
        if self._path is None:
            return table_preview([("synthetic world", "no files: data_prep generates it")], columns)
        root = Path(self._path)
        if not root.exists():
            return table_preview([(self._path, "not a local file or folder: a hub id, or not downloaded")], columns)
        files = [root] if root.is_file() else _visible_files(root)
        rows = [(p.name if p == root else str(p.relative_to(root)), f"{p.stat().st_size / 1e3:,.1f} kB") for p in files]
        if len(rows) > nfiles:
            rows = [*rows[:nfiles], (f"... and {len(rows) - nfiles} more", "")]
        return table_preview(rows, columns)


def _visible_files(folder: Path) -> list[Path]:
    # hidden entries are not the source's: `huggingface-cli download --local-dir` keeps its .cache/ there
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
