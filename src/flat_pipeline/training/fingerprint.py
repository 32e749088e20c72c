"""Which training the checkpoints in an `output_dir` belong to, so that a run resumes only its own.

`fingerprint.json` beside the checkpoints holds the config fields that change the result, the number of processes
training together and the effective batch they make, a hash of the tokenised training data and the start model's
identity. A run that finds checkpoints resumes only if its own fingerprint is the same; otherwise (or without a
fingerprint) it is refused with the differences named. Without that check a GA run resumed FLAT's finished
checkpoint, trained 0 steps and saved FLAT's weights as its result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flat_pipeline.file_modes import give_default_modes
from flat_pipeline.training.checkpoints import checkpoints_newest_first, newest_complete_checkpoint
from flat_pipeline.training.common import is_main_process, process_count

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
# Config fields that leave the trained weights unchanged: where they go, whether to resume, how often to log, what is
# evaluated along the way and when a diverging training is stopped. `launch` is left out too, as it reads differently
# in the launching process and in the launched ones (unset there); the process count is fingerprinted from the
# processes that train instead.
IGNORED_FIELDS = (
    "output_dir", "resume", "logging_steps", "launch", "trajectory", "divergence_factor", "loss_limit"
)  # fmt: skip


class CheckpointMismatch(ValueError):
    """`output_dir` holds checkpoints of another training (configuration, data or start model), or only incomplete
    ones."""


def fingerprint(config: Mapping[str, Any], datasets: Mapping[str, Any], start_model: str) -> dict[str, Any]:
    """The fingerprint of a training: `config` (its fields, as a dict, with `per_device_train_batch_size` and
    `gradient_accumulation_steps`), the number of processes this one trains with (`process_count`) and the effective
    batch they make, the tokenised `datasets` it reads (name -> datasets.Dataset or None) and the start model's
    identity (`start_model_identity`)."""
    settings = {name: value for name, value in config.items() if name not in IGNORED_FIELDS}
    # each process draws its own batches, so the process count multiplies the batch and divides the steps
    processes = process_count()
    settings["num_processes"] = processes
    settings["effective_batch_size"] = (
        config["per_device_train_batch_size"] * config["gradient_accumulation_steps"] * processes
    )
    settings = dict(sorted(settings.items()))
    return {
        "config": json.loads(json.dumps(settings, default=str)),  # as it reads back from the file
        "training_data": data_hash(datasets),
        "start_model": start_model,
    }


def data_hash(datasets: Mapping[str, Any]) -> str:
    """sha256 of the datasets' content (column names and values, in row order).

    The tokenised rows are hashed, not the raw ones: they also change with the tokenizer, the prompt format and
    max_length. `datasets`' own fingerprints cannot serve: in memory they are random.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    digest = hashlib.sha256()
    for name, dataset in sorted(datasets.items()):
        if dataset is None:
            continue
        table = dataset.with_format("arrow")[:]  # the rows in dataset order (an indices mapping applied)
        digest.update(f"{name}:{len(table)}:{','.join(table.column_names)}".encode())
        for column in table.columns:
            values = column.combine_chunks()
            while pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
                digest.update(pc.list_value_length(values).to_numpy(zero_copy_only=False).tobytes())
                values = pc.list_flatten(values)
            digest.update(str(values.type).encode())
            digest.update(_values_bytes(values))
    return f"sha256:{digest.hexdigest()}"


def _values_bytes(values: Any) -> bytes:
    import pyarrow as pa

    if values.null_count == 0 and (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        return values.to_numpy().tobytes()  # token ids: fast
    return json.dumps(values.to_pylist(), default=str).encode()


def start_model_identity(bundle: Any) -> str:
    """The SHA-256 of the weight files of the local folder the model was loaded from, else the hub id it was loaded
    from, else a hash of its weights (the tiny Llama built in memory). Weights in memory are hashed as float32, so a
    bfloat16 model and its float32 copy (a launched process loads float32) are one start model.

    Files, not the folder's name: every run saves its base model as a new catalog version, so a killed finetune's
    rerun starts from another folder holding the same weights, and must still resume. The files are read once per
    training that keeps checkpoints."""
    if bundle.source:
        weights = sorted(Path(bundle.source).glob("*.safetensors")) if Path(bundle.source).is_dir() else []
        if not weights:
            return f"loaded from {bundle.source}"
        digest = hashlib.sha256()
        for file in weights:
            digest.update(file.name.encode())
            with file.open("rb") as handle:
                while chunk := handle.read(1 << 24):
                    digest.update(chunk)
        return f"weight files sha256:{digest.hexdigest()}"
    digest = hashlib.sha256()
    for name, tensor in sorted(bundle.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return f"built in memory, weights sha256:{digest.hexdigest()}"


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, readably: changed fields (old -> new), the data, the start model."""
    old_config, new_config = old.get("config", {}), new["config"]
    found = [
        f"{name}: {old_config.get(name, '(not set)')!r} -> {new_config.get(name, '(not set)')!r}"
        for name in sorted(set(old_config) | set(new_config))
        if old_config.get(name, "(not set)") != new_config.get(name, "(not set)")
    ]
    if old.get("training_data") != new["training_data"]:
        found.append("the training data differ (rows, tokenizer, prompt format or max_length)")
    if old.get("start_model") != new["start_model"]:
        found.append(f"the start model differs: {old.get('start_model')} -> {new['start_model']}")
    return found


def checkpoint_to_resume(output_dir: str | None, resume: bool, current: dict[str, Any], block: str) -> str | None:
    """The checkpoint in `output_dir` to resume from, or None to start from the beginning; called when training
    starts. Resuming needs the folder's fingerprint to equal `current`; otherwise CheckpointMismatch names the
    differences. Starting over (no checkpoint, or `resume` false) deletes old checkpoints (the Trainer keeps the
    highest-numbered one, which could be an older run's) and writes `current` (main process only).

    Only whole checkpoints are resumed (`newest_complete_checkpoint`): newer ones that a kill left incomplete are
    deleted with a warning; a folder holding nothing else is refused, saying so. Call it holding the folder
    (`owned_output_dir`). `block` names the parameters in messages (e.g. `unlearn`, `finetune.training`).
    """
    if output_dir is None:
        return None
    folder = Path(output_dir)
    whole, incomplete = newest_complete_checkpoint(folder) if folder.is_dir() else (None, {})
    checkpoint = str(whole) if whole else None
    advice = (
        f"Set {block}.output_dir to another folder, or {block}.resume=false to start over in {folder} (its "
        f"checkpoints are deleted)."
    )
    described = ", ".join(f"{path.name} ({why})" for path, why in incomplete.items())
    if resume and incomplete and checkpoint is None:
        raise CheckpointMismatch(
            f"{block}.output_dir {folder} holds no whole checkpoint to resume: {described}, as a training killed "
            f"while writing it leaves them. {advice}"
        )
    if checkpoint and resume:
        stored = _read(folder / FINGERPRINT_FILE)
        if stored is None:
            raise CheckpointMismatch(
                f"{block}.output_dir {folder} holds {Path(checkpoint).name} but no {FINGERPRINT_FILE} saying which "
                f"configuration, data and start model made it, so it cannot be resumed safely. {advice}"
            )
        found = differences(stored, current)
        if found:
            raise CheckpointMismatch(
                f"{block}.output_dir {folder} holds {Path(checkpoint).name} of another training; resuming it would "
                f"continue that run. Differences (checkpoint -> this run): {'; '.join(found)}. {advice}"
            )
        if incomplete:  # this training's own, cut short by a kill: written again once it resumes
            logger.warning("%s.output_dir %s: skipping incomplete %s; resuming %s", block, folder, described,
                           Path(checkpoint).name)  # fmt: skip
            if is_main_process():
                for path in incomplete:
                    shutil.rmtree(path)
        return checkpoint
    if is_main_process():
        if checkpoint or incomplete:
            logger.warning("%s.resume is false: deleting the old checkpoints in %s", block, folder)
            for old in checkpoints_newest_first(folder):
                shutil.rmtree(old)
        _write(folder / FINGERPRINT_FILE, current)
    return None


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write(path: Path, content: Mapping[str, Any]) -> None:
    """Atomically: a temporary file in the same folder, then `os.replace`; a reader sees the old file or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(content, file, indent=2, sort_keys=True)
        give_default_modes(temporary)  # mkstemp makes it 0600
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
