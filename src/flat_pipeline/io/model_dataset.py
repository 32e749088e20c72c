"""A versioned Kedro dataset for a Hugging Face model + tokenizer folder (`save_pretrained` / `from_pretrained`)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version

from flat_pipeline.models.loading import ModelBundle, load_causal_lm

from .atomic import AtomicSaveMixin


class HFModelDataset(AtomicSaveMixin, AbstractVersionedDataset[ModelBundle, ModelBundle]):
    """Saves a ModelBundle as one folder (config, safetensors weights, tokenizer files) and loads it back.

    With `versioned: true` every save goes to `<filepath>/<timestamp>/<name>/` and never overwrites an earlier one.
    The folder is written as `<filepath>/<timestamp>/.<name>.partial-<random>/` and renamed to `<name>` once model
    and tokenizer are both on disk (`AtomicSaveMixin`), so a run killed or out of disk space mid-save leaves no
    version that the next run could take for the latest. Local paths only.

    Example catalog entry::

        original_model:
          type: flat_pipeline.io.HFModelDataset
          filepath: data/06_models/original_model
          versioned: true
          load_args: {dtype: bfloat16, attn_implementation: sdpa}
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
        self.metadata = metadata

    @staticmethod
    def _folder_exists(path: str) -> bool:
        # a full model, or a LoRA adapter saved alone (`lora.save: adapter`)
        return (Path(path) / "config.json").is_file() or (Path(path) / "adapter_config.json").is_file()

    def load(self) -> ModelBundle:
        return load_causal_lm(str(self._get_load_path()), **self._load_args)

    def save(self, data: ModelBundle) -> None:
        if not isinstance(data, ModelBundle):
            raise DatasetError(f"HFModelDataset saves a ModelBundle(model, tokenizer), got {type(data).__name__}")
        with self._staged_save(data):
            path = Path(str(self._get_save_path()))  # the hidden folder, renamed when both are written
            path.mkdir(parents=True, exist_ok=True)
            data.model.save_pretrained(path)
            data.tokenizer.save_pretrained(path)

    def _exists(self) -> bool:
        try:
            return self._folder_exists(str(self._get_load_path()))
        except DatasetError:
            return False

    def _describe(self) -> dict[str, Any]:
        # Kedro calls this on every load for logging: no I/O here.
        return {"filepath": self._filepath, "version": self._version, "load_args": self._load_args}
