"""Model folders that transformers 4.45 reads as the pinned 5.x does: the JSON files of a `save_pretrained` folder,
rewritten in place.

5.x writes settings that 4.x looks for under other names or not at all, and 4.x then goes on with its own defaults
without a word:

- config.json: the rotary settings sit in `rope_parameters` (4.x: `rope_theta`, default 10000, wrong for Llama-3's
  500000; and `rope_scaling`), the weights' dtype in `dtype` (4.x: `torch_dtype`);
- tokenizer_config.json: `tokenizer_class` is `TokenizersBackend` (unknown to 4.x); the class defaults that 5.x
  keeps out of the file differ from 4.x's generic class (4.x's `PreTrainedTokenizerFast` returns `token_type_ids`,
  which a Llama's forward refuses); extra special tokens are `extra_special_tokens` (4.x:
  `additional_special_tokens`); the chat template is in `chat_template.jinja` (4.x reads `chat_template` here only).

`make_portable` adds the 4.x spellings beside the 5.x ones, from the 5.x values. 5.x reads the folder as before (the
same ids and weights; a tokenizer whose class name became `PreTrainedTokenizerFast` loads as 5.x's generic class): it
prefers `rope_parameters`, `dtype` and `chat_template.jinja`, and ignores `add_bos_token` /
`add_eos_token` when tokenizer.json is there (checked by tests/models/test_portable.py, with transformers 4.45.1
itself).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flat_pipeline.file_modes import give_default_modes

logger = logging.getLogger(__name__)

GENERIC_TOKENIZER = "PreTrainedTokenizerFast"  # 4.x's class for a bare tokenizer.json, read as it is
# 4.x's LlamaTokenizerFast rebuilds the post-processor from add_bos_token / add_eos_token (default: bos only), so it
# is kept only where those flags reproduce tokenizer.json's; otherwise the generic class reads the file unchanged.
LLAMA_TOKENIZERS = ("LlamaTokenizer", "LlamaTokenizerFast")
# Defaults of the 5.x class that 4.x's generic class does not share; written where the file does not say.
CLASS_DEFAULTS = ("padding_side", "truncation_side", "model_input_names")


def make_portable(folder: str | os.PathLike[str]) -> list[str]:
    """Rewrite the JSON files of a `save_pretrained` folder (model, tokenizer, or both; a LoRA adapter folder's
    tokenizer) so that transformers 4.45 loads it as 5.x does; returns the names of the files changed.

    Each file is replaced atomically (a temporary file, then `os.replace`); a second call changes nothing.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"make_portable: expected a save_pretrained folder, got '{folder}' (no such folder)")
    changed = []
    if _rewrite(folder / "config.json", portable_config):
        changed.append("config.json")
    tokenizer_json = _read_json(folder / "tokenizer.json")
    template_file = folder / "chat_template.jinja"
    chat_template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None

    def tokenizer(config: dict[str, Any]) -> dict[str, Any]:
        defaults = tokenizer_class_defaults(config.get("tokenizer_class"))
        return portable_tokenizer_config(config, tokenizer_json, chat_template, defaults)

    if _rewrite(folder / "tokenizer_config.json", tokenizer):
        changed.append("tokenizer_config.json")
    if changed:
        logger.debug("made %s readable by transformers 4.x: %s", folder, ", ".join(changed))
    return changed


def portable_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """config.json with 4.x's `rope_theta`, `rope_scaling` and `torch_dtype` taken from 5.x's `rope_parameters` and
    `dtype` (also inside sub-configs such as `text_config`)."""
    out = {key: portable_config(value) if _is_sub_config(value) else value for key, value in config.items()}
    if out.get("dtype") is not None:
        out["torch_dtype"] = out["dtype"]
    rope = out.get("rope_parameters")
    # Per-layer-type rotary settings (a dict of dicts, e.g. Gemma 3) have no 4.45 spelling: left as they are.
    if isinstance(rope, Mapping) and "rope_theta" in rope:
        out["rope_theta"] = rope["rope_theta"]
        if "partial_rotary_factor" in rope:
            out.setdefault("partial_rotary_factor", rope["partial_rotary_factor"])
        # No rope_scaling for plain rotary embeddings: 5.x reads the key as another name of rope_parameters.
        if rope.get("rope_type", "default") != "default":  # 4.x checks rope_scaling's keys: no rope_theta in it
            out["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    return out


def portable_tokenizer_config(
    config: Mapping[str, Any],
    tokenizer_json: Mapping[str, Any] | None,
    chat_template: str | None = None,
    class_defaults: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """tokenizer_config.json that 4.x reads as 5.x does.

    `tokenizer_json`: the folder's tokenizer.json (None: there is none, and the class is left as it is);
    `chat_template`: the folder's chat_template.jinja; `class_defaults`: `tokenizer_class_defaults` of the class 5.x
    wrote, for the keys in CLASS_DEFAULTS that the file leaves to the class.
    """
    out = dict(config)
    if chat_template is not None and "chat_template" not in out:
        out["chat_template"] = chat_template
    extra = out.get("extra_special_tokens")
    if isinstance(extra, list) and extra and "additional_special_tokens" not in out:
        out["additional_special_tokens"] = list(extra)
    if tokenizer_json is None or out.get("backend", "tokenizers") != "tokenizers":
        return out
    for key, value in (class_defaults or {}).items():
        out.setdefault(key, value)
    out["clean_up_tokenization_spaces"] = _clean_up_spaces(out, tokenizer_json)
    flags = _llama_flags(out, tokenizer_json) if out.get("tokenizer_class") in LLAMA_TOKENIZERS else None
    if flags is None:
        out["tokenizer_class"] = GENERIC_TOKENIZER
    else:
        out["tokenizer_class"] = "LlamaTokenizerFast"
        out["add_bos_token"], out["add_eos_token"] = flags
    return out


def tokenizer_class_defaults(name: str | None) -> dict[str, Any]:
    """The 5.x tokenizer class's own `padding_side`, `truncation_side` and `model_input_names` ({} for an unknown
    name)."""
    import transformers

    cls = getattr(transformers, name, None) if name else None
    if not isinstance(cls, type):
        return {}
    defaults = {key: getattr(cls, key) for key in CLASS_DEFAULTS if hasattr(cls, key)}
    if "model_input_names" in defaults:
        defaults["model_input_names"] = list(defaults["model_input_names"])
    return defaults


def _is_sub_config(value: Any) -> bool:
    return isinstance(value, Mapping) and "model_type" in value


def _clean_up_spaces(config: Mapping[str, Any], tokenizer_json: Mapping[str, Any]) -> bool:
    """The value 5.x decodes with: it skips the clean-up for a BPE model unless told to corrupt its output; 4.x does
    not skip it, so the file says what 5.x does."""
    wanted = bool(config.get("clean_up_tokenization_spaces", False))
    is_bpe = (tokenizer_json.get("model") or {}).get("type") == "BPE"
    forced = bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))
    return wanted and (forced or not is_bpe)


def _llama_flags(config: Mapping[str, Any], tokenizer_json: Mapping[str, Any]) -> tuple[bool, bool] | None:
    """(add_bos_token, add_eos_token) with which 4.x's LlamaTokenizerFast rebuilds tokenizer.json's post-processor
    exactly; None where no pair does, or where 4.x would convert the tokenizer again from a sentencepiece file (a
    non-null add_prefix_space)."""
    if config.get("add_prefix_space") is not None:
        return None
    post = tokenizer_json.get("post_processor") or {}
    if post.get("type") != "TemplateProcessing":
        return None
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    for add_bos in (False, True):
        for add_eos in (False, True):
            if (add_bos and bos is None) or (add_eos and eos is None):
                continue
            single = _template([bos if add_bos else None], "A", [eos if add_eos else None], 0)
            second = _template([bos if add_bos else None], "B", [eos if add_eos else None], 1)
            if post.get("single") == single and post.get("pair") == single + second:
                return add_bos, add_eos
    return None


def _template(before: list[str | None], sequence: str, after: list[str | None], type_id: int) -> list[dict]:
    """One sequence of a TemplateProcessing as tokenizer.json spells it."""

    def special(token: str) -> dict:
        return {"SpecialToken": {"id": token, "type_id": type_id}}

    return [
        *(special(t) for t in before if t is not None),
        {"Sequence": {"id": sequence, "type_id": type_id}},
        *(special(t) for t in after if t is not None),
    ]


def _token_text(token: Any) -> str | None:
    # 5.x writes special tokens as strings; older files as AddedToken dicts
    return token.get("content") if isinstance(token, Mapping) else token


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"make_portable: {path} is not valid JSON ({err})") from err


def _rewrite(path: Path, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """Apply `change` to a JSON file; write it (atomically) only if it changed. Whether it did."""
    before = _read_json(path)
    if before is None:
        return False
    after = change(before)
    if after == before:
        return False
    text = json.dumps(after, indent=2, sort_keys=True, ensure_ascii=False) + "\n"  # as transformers writes them
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        give_default_modes(temporary)  # mkstemp makes it 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True
