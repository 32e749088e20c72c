"""Checkpoint folders that belong to one training at a time, and checkpoints that are whole.

- **Ownership.** A training that keeps checkpoints holds `output_dir/.training.lock` (host, pid, start time) from
  before it writes its fingerprint until it ends. A second training on the same folder is refused, naming the holder:
  otherwise its fingerprint replaces the first one's beside the first one's checkpoints, and a later resume continues
  the wrong training. A lock left by a process that no longer runs on this host (its id gone, or given to a process
  started later) is taken over, with a log line.
- **Whole checkpoints.** The Trainer writes a checkpoint file by file, `trainer_state.json` last; a training killed
  while writing leaves a folder without it (or with it cut short). Resume takes the newest checkpoint that has its
  weights and a readable `trainer_state.json`, and skips newer incomplete ones with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flat_pipeline.processes import process_is_alive, start_time
from flat_pipeline.training.common import is_main_process

logger = logging.getLogger(__name__)

LOCK_FILE = ".training.lock"
TRAINER_STATE = "trainer_state.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class OutputDirBusy(RuntimeError):
    """Another training holds the `output_dir`."""


def _holder(lock: Path) -> dict[str, object] | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):  # gone, unreadable, or being written
        return None


def _process_gone(holder: dict[str, object]) -> bool:
    """True when the lock's process is known to have ended: same host, and no process with that id started then (an
    id the system has given to a new process since counts as gone). A process on another host cannot be checked,
    and counts as running."""
    if holder.get("host") != socket.gethostname():
        return False
    try:
        pid = int(holder.get("pid", -1))
        started = holder.get("process_started")
        return not process_is_alive(pid, float(started) if started is not None else None)
    except (TypeError, ValueError):
        return False


def _create(lock: Path, mine: dict[str, object]) -> bool:
    """Create the lock file if there is none (O_EXCL: of two creators, one wins); whether this process did."""
    try:
        handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)  # the umask then applies
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as file:
        json.dump(mine, file)
    return True


def _take_over(lock: Path, mine: dict[str, object]) -> bool:
    """Replace a stale lock: rename it aside (of two takers, one renames it, the other finds it gone), then create."""
    aside = lock.with_name(f"{LOCK_FILE}.stale-{secrets.token_hex(4)}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    aside.unlink(missing_ok=True)
    return _create(lock, mine)


@contextmanager
def owned_output_dir(output_dir: str | None, block: str) -> Iterator[None]:
    """Hold `output_dir` for one training (module docstring); nothing without an `output_dir`, or in a launched
    process other than the main one (the main one holds it for all)."""
    if output_dir is None or not is_main_process():
        yield
        return
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    mine = {
        "host": socket.gethostname(), "pid": os.getpid(), "process_started": start_time(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    taken = _create(lock, mine)
    if not taken:
        holder = _holder(lock)
        if holder is not None and _process_gone(holder):
            logger.warning(
                "%s.output_dir %s: taking over the lock of a training that is gone (host %s, pid %s, started %s)",
                block, folder, holder.get("host"), holder.get("pid"), holder.get("started"),
            )  # fmt: skip
            taken = _take_over(lock, mine)
        if not taken:
            holder = _holder(lock) or {}
            raise OutputDirBusy(
                f"{block}.output_dir {folder} is in use by another training (host {holder.get('host', '?')}, pid "
                f"{holder.get('pid', '?')}, started {holder.get('started', '?')}; lock file {lock}). Wait for it to "
                f"end, or set {block}.output_dir to another folder; if that process is gone (another host cannot be "
                f"checked from here), delete {lock}."
            )
    try:
        yield
    finally:
        if _holder(lock) == mine:
            lock.unlink(missing_ok=True)


def incomplete_reason(checkpoint: Path) -> str | None:
    """Why a checkpoint folder cannot be resumed (a file missing or cut short), or None when it is whole."""
    if not any((checkpoint / name).is_file() for name in WEIGHT_FILES):
        return "no weights file"
    state = checkpoint / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE}"
    try:
        json.loads(state.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"{TRAINER_STATE} cut short"
    return None


def checkpoints_newest_first(folder: Path) -> list[Path]:
    """The `checkpoint-<step>` folders of `folder`, highest step first."""
    steps = {path: _CHECKPOINT.match(path.name) for path in folder.glob("checkpoint-*") if path.is_dir()}
    return sorted((path for path, step in steps.items() if step), key=lambda p: -int(p.name.split("-")[1]))


def newest_complete_checkpoint(folder: Path) -> tuple[Path | None, dict[Path, str]]:
    """The newest whole checkpoint in `folder` (None if there is none), and the newer incomplete ones with why."""
    skipped: dict[Path, str] = {}
    for checkpoint in checkpoints_newest_first(folder):
        reason = incomplete_reason(checkpoint)
        if reason is None:
            return checkpoint, skipped
        skipped[checkpoint] = reason
    return None, skipped
