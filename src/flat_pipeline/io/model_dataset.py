"""A versioned Kedro dataset for a Hugging Face model + tokenizer folder (`save_pretrained` / `from_pretrained`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro_datasets._typing import TablePreview

from flat_pipeline.models.describe import describe_model_folder
from flat_pipeline.models.loading import LOAD_SETTINGS, ModelBundle, load_causal_lm
from flat_pipeline.models.portable import make_portable

from .atomic import AtomicSaveMixin
from .previews import table_preview

logger = logging.getLogger(__name__)

# The `model` parameters a dataset loads with; gradient checkpointing too, as a loaded model may be trained on.
MODEL_SETTINGS = (*LOAD_SETTINGS, "gradient_checkpointing")
# What `save_pretrained` writes the weights of a model or of a LoRA adapter to, sharded or not.
WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "adapter_model.bin")


def _has_weights(folder: Path) -> bool:
    """Whether a `save_pretrained` folder holds all its weights: a single file, or every shard its index names."""
    for index in folder.glob("*.index.json"):  # model.safetensors.index.json, pytorch_model.bin.index.json
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):  # cut short mid-write: the save did not finish either
            return False
        if not shards or not all((folder / shard).is_file() for shard in shards):
            return False
    return any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES)


class HFModelDataset(AtomicSaveMixin, AbstractVersionedDataset[ModelBundle, ModelBundle]):
    """Saves a ModelBundle as one folder (config, safetensors weights, tokenizer files) and loads it back.

    With `versioned: true` every save goes to `<filepath>/<timestamp>/<name>/` and never overwrites an earlier one.
    The folder is written as `<filepath>/<timestamp>/.<name>.partial-<random>/` and renamed to `<name>` once model
    and tokenizer are both on disk (`AtomicSaveMixin`), so a run killed or out of disk space mid-save leaves no
    version that the next run could take for the latest. Local paths only. Every saved folder also loads with
    transformers 4.45 (`make_portable`).

    `load_args` are `load_causal_lm`'s: `dtype`, `attn_implementation`, `gradient_checkpointing`. The entries of
    catalog.yml take them from the run's `model` parameters (`${params:model.dtype}`, io/config_loader.py), so a
    notebook's `catalog.load` loads as a run does. An entry that leaves some open gets the run's value for it just
    before a run loads it (`use_model_settings`, hooks/model_settings.py).

    A version whose folder lacks its weights (a save from before atomic saves, killed after config.json) is not a
    version: the latest is the newest one complete, and a warning names the folder skipped.

    Example catalog entry::

        original_model:
          type: flat_pipeline.io.HFModelDataset
          filepath: data/06_models/original_model
          versioned: true
          load_args: {dtype: bfloat16, attn_implementation: sdpa, gradient_checkpointing: true}
    """

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(filepath=PurePosixPath(filepath), version=version, exists_function=self._folder_exists)
        self._load_args = dict(load_args or {})
        self._model_settings: dict[str, Any] = {}
        self.metadata = metadata

    def use_model_settings(self, model_params: Mapping[str, Any]) -> None:
        """Load with the run's `model` parameters (`dtype`, `attn_implementation`, `gradient_checkpointing`) where
        `load_args` leave them open; other keys of the block are ignored."""
        self._model_settings = {key: model_params[key] for key in MODEL_SETTINGS if model_params.get(key) is not None}

    @staticmethod
    def _folder_exists(path: str) -> bool:
        """Whether `path` holds a model to load: a full model or a LoRA adapter saved alone (`lora.save: adapter`),
        with its weights. Kedro takes the newest version for which this is true as the latest."""
        folder = Path(path)
        if not ((folder / "config.json").is_file() or (folder / "adapter_config.json").is_file()):
            return False
        if _has_weights(folder):
            return True
        # A save from before atomic saves, killed after the config: loading it would fail, or load random weights.
        logger.warning("%s: no model weights (a save killed before it finished?); not taken as a version", folder)
        return False

    def load(self) -> ModelBundle:
        return load_causal_lm(str(self._get_load_path()), **self._effective_load_args())

    def _effective_load_args(self) -> dict[str, Any]:
        return {**self._model_settings, **self._load_args}

    def save(self, data: ModelBundle) -> None:
        if not isinstance(data, ModelBundle):
            raise DatasetError(f"HFModelDataset saves a ModelBundle(model, tokenizer), got {type(data).__name__}")
        with self._staged_save(data):
            path = Path(str(self._get_save_path()))  # the hidden folder, renamed when both are written
            path.mkdir(parents=True, exist_ok=True)
            data.model.save_pretrained(path)
            data.tokenizer.save_pretrained(path)
            make_portable(path)  # before the rename: the version appears readable by transformers 4.x too

    def _exists(self) -> bool:
        try:
            return self._folder_exists(str(self._get_load_path()))
        except DatasetError:
            return False

    def preview(self) -> TablePreview:
        """kedro-viz's view of the latest version (or the pinned one): architecture, parameter count, vocabulary,
        dtype and size, from config.json and the safetensors headers; no weight is loaded."""
        folder = Path(str(self._get_load_path()))
        info = describe_model_folder(folder)
        parameters, size = info.pop("parameters"), info.pop("weight_bytes")
        rows = [
            ("folder", str(folder)),
            *info.items(),
            ("parameters", f"{parameters:,}" if parameters else "unknown (no safetensors weights)"),
            ("weights on disk", f"{size / 1e6:,.1f} MB"),
        ]
        return table_preview(rows, columns=("property", "value"))

    def _describe(self) -> dict[str, Any]:
        # Kedro calls this on every load for logging: no I/O here.
        return {"filepath": self._filepath, "version": self._version, "load_args": self._effective_load_args()}


class ModelFolderDataset(HFModelDataset):
    """The versions of an HFModelDataset read as the folder of the latest (or pinned) one, loading no weights: for a
    node that loads the model only when its parameters ask for it (the templates node, which generates template
    answers with the base model only for `templates.source: generated`). Declared beside the model's entry as a
    transcoded view of the same dataset (`base_model@folder` beside `base_model@model`), so that Kedro runs the node
    that saves the model first.

    `load` gives None while no version exists: the reader says what it needs. Read-only.
    """

    missing_ok = True

    def load(self) -> str | None:  # type: ignore[override]
        if not self.exists() and not (self._version and self._version.load):
            return None
        return str(self._get_load_path())

    def save(self, data: Any) -> None:
        raise DatasetError(f"{self._filepath}: a model folder view is read-only; save through the model's own entry")
