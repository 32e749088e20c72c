"""The kedro-datasets types our catalog versions, with atomic saves (see `AtomicSaveMixin`).

Same names, arguments, loading, `exists`, `describe` and previews as the kedro-datasets classes; only `save` differs:
a version (or an unversioned file or folder) appears under its final name only once it is complete. In the catalog,
`type: flat_pipeline.io.JSONDataset` instead of `type: json.JSONDataset`, and so on. One preview differs too:
kedro-viz shows a JSONDataset as a table of its entries (an evaluation summary's metrics), not as raw JSON.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Any

from kedro_datasets._typing import TablePreview
from kedro_datasets.huggingface import ArrowDataset as KedroArrowDataset
from kedro_datasets.json import JSONDataset as KedroJSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset as KedroMatplotlibDataset
from kedro_datasets.pandas import CSVDataset as KedroCSVDataset
from kedro_datasets.pandas import ParquetDataset as KedroParquetDataset
from kedro_datasets.text import TextDataset as KedroTextDataset

from .atomic import AtomicSaveMixin
from .previews import flatten, table_preview

logger = logging.getLogger(__name__)


class ArrowDataset(AtomicSaveMixin, KedroArrowDataset):
    """`huggingface.ArrowDataset` (a `save_to_disk` folder) whose versions appear only when complete."""


class JSONDataset(AtomicSaveMixin, KedroJSONDataset):
    """`json.JSONDataset` whose versions appear only when complete.

    `missing_ok: true` (the retain reference): with no saved version, `load` gives None with a warning instead of
    failing, for nodes that can work without it (evaluating the original model before any retain model).
    """

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str,
        save_args: dict[str, Any] | None = None,
        version: Any = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> None:
        super().__init__(
            filepath=filepath,
            save_args=save_args,
            version=version,
            credentials=credentials,
            fs_args=fs_args,
            metadata=metadata,
        )
        self.missing_ok = missing_ok

    def load(self) -> Any:
        if self.missing_ok and not self.exists() and not (self._version and self._version.load):
            logger.warning("%s has no saved version: loaded as None", self._filepath)
            return None
        return super().load()

    def preview(self, key: str | None = None, nrows: int = 200) -> TablePreview:
        """kedro-viz's view: one row per entry, nested entries by dotted name (`retain_reference.forget_split`),
        lists by their length; `key` shows one entry's content alone (`preview_args: {key: metrics}` for a summary's
        metrics), and at most `nrows` rows are shown."""
        data = self.load()
        if key is not None:
            if not isinstance(data, dict) or not isinstance(data.get(key), dict):
                found = sorted(data) if isinstance(data, dict) else type(data).__name__
                raise KeyError(f"{self._get_load_path()}: preview_args key '{key}': no such mapping (found {found})")
            data = data[key]
        rows = flatten(data) if isinstance(data, dict) else [("value", data)]
        return table_preview(rows[:nrows])


class ParquetDataset(AtomicSaveMixin, KedroParquetDataset):
    """`pandas.ParquetDataset` whose versions appear only when complete."""

    def _stages_save(self, data: Any, final_path: PurePosixPath) -> bool:
        # kedro-datasets refuses to save over a folder, with its own message: let it see the folder and say so
        return not Path(str(final_path)).is_dir() and super()._stages_save(data, final_path)


class CSVDataset(AtomicSaveMixin, KedroCSVDataset):
    """`pandas.CSVDataset` whose versions appear only when complete."""


class TextDataset(AtomicSaveMixin, KedroTextDataset):
    """`text.TextDataset` whose versions appear only when complete."""


class MatplotlibDataset(AtomicSaveMixin, KedroMatplotlibDataset):
    """`matplotlib.MatplotlibDataset` whose versions appear only when complete.

    A list or dict of figures saved unversioned goes into its folder file by file, as in kedro-datasets (merged
    with what is there, or replaced with `overwrite: true`); a versioned one is staged as a whole folder.
    """

    def _stages_save(self, data: Any, final_path: PurePosixPath) -> bool:
        if not self._version and isinstance(data, list | dict):
            return False
        return super()._stages_save(data, final_path)
