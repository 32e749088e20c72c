"""Atomic saves: a dataset version appears under its final name only once it is complete.

Kedro picks the latest version of a dataset by globbing `<filepath>/*/<name>` and taking the newest match that
exists. A save killed half-way (`kill -9`, a full disk, an exception in the writer) used to leave a partial
`<filepath>/<version>/<name>` behind, and the next run loaded it as the latest version. Here every save writes to a
hidden sibling, `<filepath>/<version>/.<name>.partial-<random>`, which that glob never matches, and renames it to
`<name>` only after the writer has finished and the data is on disk.

A process killed outright (SIGKILL, power loss) cannot remove its hidden copy. The name of each carries the process
writing it and its machine, `.<name>.partial-<random>.<pid>@<host>`, so that the next save of the dataset can remove
those whose process has ended (`sweep_partials`) and leave alone those of another run saving at the same time.
"""

from __future__ import annotations

import glob
import inspect
import logging
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import wraps
from pathlib import Path, PurePosixPath
from typing import Any

from flat_pipeline.file_modes import give_default_modes

logger = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"  # in the name of a save in progress, or of one killed before it could clean up
LOCAL_PROTOCOLS = ("file", "local")
# The machine in a partial's name: a process id says whether its writer lives only on the machine it came from.
HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "unknown"
# A partial whose writer cannot be asked (on another machine, or named before names carried it) is removed once
# nothing in it changed for this long: a save in progress writes on (a 7B model's shards take minutes, not hours).
STALE_PARTIAL_S = 24 * 3600
_OWNER = re.compile(r"\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9.-]+)$")


def partial_name(name: str) -> str:
    """The hidden name a save of `name` writes to before it is renamed: `.<name>.partial-<8 hex digits>.<pid>@<host>`,
    the process and machine writing it."""
    return f".{name}{PARTIAL_MARK}{secrets.token_hex(4)}.{os.getpid()}@{HOST}"


def sweep_partials(folders: Iterable[Path], name: str) -> list[Path]:
    """Remove the hidden copies of `name` in `folders` that no save is writing any more; return them.

    One is removed when the process named in it has ended on this machine, or, where that cannot be asked (written on
    another machine, or by a version of this code whose names carried no process), when nothing in it changed for
    STALE_PARTIAL_S. A folder left empty (a version folder that held only the partial) goes too. Each is logged.
    """
    removed = []
    for folder in folders:
        for partial in sorted(folder.glob(f".{glob.escape(name)}{PARTIAL_MARK}*")):
            try:
                why = _abandoned(partial)
            except OSError:  # another run removed it meanwhile
                continue
            if why is None:
                continue
            _remove(partial)
            with suppress(OSError):  # only if empty
                folder.rmdir()
            logger.info("Removed %s, a save that never finished: %s", partial, why)
            removed.append(partial)
    return removed


def _abandoned(partial: Path) -> str | None:
    """Why no save writes `partial` any more, or None while one may."""
    owner = _OWNER.search(partial.name)
    if owner and owner["host"] == HOST:
        pid = int(owner["pid"])
        return None if _process_exists(pid) else f"its process {pid} has ended"
    idle_s = time.time() - _last_change(partial)
    if idle_s < STALE_PARTIAL_S:
        return None
    writer = f"written on {owner['host']}" if owner else "its writer unknown"
    return f"{writer}, unchanged for {idle_s / 3600:.0f} h"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _last_change(path: Path) -> float:
    """The latest modification time of `path` or anything under it."""
    times = [path.lstat().st_mtime]
    if path.is_dir() and not path.is_symlink():
        for folder, _, files in os.walk(path):
            times += [(Path(folder) / f).lstat().st_mtime for f in files] + [Path(folder).lstat().st_mtime]
    return max(times)


class AtomicSaveMixin:
    """Makes a Kedro versioned dataset publish each save by a rename, so no reader ever sees a partial one.

    Put it first among the bases, before the Kedro dataset it wraps. During `save`, `_get_save_path()` returns a
    hidden sibling of the final path (`.<name>.partial-<random>`, in the same version folder); once the dataset's own
    save has returned, every file is flushed to disk (fsync) and the sibling is renamed to the final name, a single
    atomic step on one filesystem. On any failure, KeyboardInterrupt included, the sibling and the version folder
    it leaves empty are removed and the error is re-raised: nothing is left under the final name.

    A process killed outright (SIGKILL, power loss) cannot clean up: it leaves
    `<filepath>/<version>/.<name>.partial-<random>.<pid>@<host>`, invisible to Kedro's version lookup. The first
    save of the dataset (per dataset object) removes those no process is writing any more (`sweep_partials`).

    Unversioned datasets get the same treatment: a file is replaced by `os.replace`; a folder that already exists is
    first renamed aside (`.<name>.replaced-<random>`) and deleted once the new one is in place.

    Only local paths are staged. On other protocols (s3://, gcs://, ...) a rename is a copy, so the dataset writes
    in place as it always did: a single object there becomes visible only when its upload completes, a folder of
    several objects does not.

    Datasets that add to what is already there (an `open_args_save` mode other than `w`/`wb`, e.g. append) are
    written in place too, as the sibling would lose what they add to.
    """

    _staging_path: PurePosixPath | None = None
    _partials_swept = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        inherits_init = "__init__" not in vars(cls)
        super().__init_subclass__(**kwargs)  # Kedro wraps `load`, `save` and `__init__` here
        # Kedro wraps a subclass's `save` again on top of the parent's already wrapped one when the subclass defines
        # none, so the version bookkeeping would run twice (two timestamps, a consistency warning): wrap it once.
        cls.save = cls._save_wrapper(inspect.unwrap(cls.save))  # type: ignore[attr-defined]
        if inherits_init:
            cls.__init__ = _recording_own_arguments(cls.__init__)  # type: ignore[method-assign]

    def _get_save_path(self) -> PurePosixPath:
        if self._staging_path is not None:
            return self._staging_path
        return super()._get_save_path()  # type: ignore[misc]

    def _stages_save(self, data: Any, final_path: PurePosixPath) -> bool:
        """Whether this save goes through a hidden sibling (see the class docstring for when it does not)."""
        mode = getattr(self, "_fs_open_args_save", {}).get("mode", "w")
        return getattr(self, "_protocol", "file") in LOCAL_PROTOCOLS and mode.startswith("w")

    def _sweep_partials_once(self, final_path: Path) -> None:
        """On this dataset object's first save, remove what saves of it killed outright left (`sweep_partials`)."""
        if self._partials_swept:
            return
        self._partials_swept = True
        if self._version:  # type: ignore[attr-defined]
            root = final_path.parent.parent  # <filepath>, a folder per version
            folders = [folder for folder in root.iterdir() if folder.is_dir()] if root.is_dir() else []
        else:
            folders = [final_path.parent]
        sweep_partials(folders, final_path.name)

    @contextmanager
    def _staged_save(self, data: Any) -> Iterator[None]:
        """Inside: `_get_save_path()` is the hidden sibling. On leaving: renamed to the final path, or removed."""
        final = super()._get_save_path()  # type: ignore[misc]  # resolves the version, refuses an existing one
        if not self._stages_save(data, final):
            yield
            return
        final_path = Path(str(final))
        staging = final_path.with_name(partial_name(final_path.name))
        version_folder = final_path.parent if self._version else None  # type: ignore[attr-defined]
        self._sweep_partials_once(final_path)
        try:
            staging.parent.mkdir(parents=True, exist_ok=True)
            self._staging_path = PurePosixPath(staging.as_posix())
            yield
            _publish(staging, final_path)
        except BaseException:
            _remove(staging)
            if version_folder is not None:
                with suppress(OSError):  # only if empty: never anything another save put there
                    version_folder.rmdir()
            outcome = f"no version {final_path.parent.name} written" if version_folder else f"{final} left as it was"
            logger.warning("Saving %s failed: %s (the incomplete copy is removed)", self, outcome)
            raise
        finally:
            self._staging_path = None

    def save(self, data: Any) -> None:
        # The parent's save unwrapped: Kedro's wrapper around this method already did the version bookkeeping.
        parent_save = inspect.unwrap(super().save.__func__)  # type: ignore[misc]
        with self._staged_save(data):
            parent_save(self, data)


def _recording_own_arguments(init: Callable[..., None]) -> Callable[..., None]:
    """Make `_init_args` (behind `catalog.to_config()` and `kedro catalog` commands) name the real parameters.

    Kedro records a dataset's arguments by inspecting the `__init__` it wraps. For a subclass that inherits its
    `__init__`, that is the parent's wrapper, whose `*args, **kwargs` would be recorded instead.
    """
    own_init = inspect.unwrap(init)

    @wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._init_args = inspect.getcallargs(own_init, self, *args, **kwargs)
        self._init_args.pop("self", None)

    return __init__


def _publish(staging: Path, final: Path) -> None:
    """Rename a finished save to its final name, after flushing it to disk."""
    if not staging.exists():
        return  # the writer wrote nothing (an empty dict of figures): nothing to publish, as without staging
    give_default_modes(staging)  # readable by whoever may read a new file here, not 0600 as some writers stage them
    _flush_to_disk(staging)
    if staging.is_dir() and final.exists():
        # An unversioned folder saved again: rename() cannot replace a non-empty folder, so the old one steps aside.
        retired = final.with_name(f".{final.name}.replaced-{secrets.token_hex(4)}")
        os.rename(final, retired)
        try:
            os.rename(staging, final)
        except BaseException:
            os.rename(retired, final)
            raise
        _remove(retired)
    else:
        os.replace(staging, final)
    _fsync_folder(final.parent)


def _flush_to_disk(path: Path) -> None:
    """fsync every file under `path`: the rename must not publish data that a power loss could still take away,
    and a write error the filesystem reports late (ENOSPC on NFS) must surface before the version is published."""
    if not path.is_dir():
        _fsync_file(path)
        return
    for folder, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_file(Path(folder) / name)
        _fsync_folder(Path(folder))


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(path: Path) -> None:
    # Makes a rename durable; some filesystems (and platforms) refuse to open or fsync a folder, which costs only
    # durability, never correctness.
    with suppress(OSError):
        _fsync_file(path)


def _remove(path: Path) -> None:
    """Delete a file or folder, quietly: it runs while another error is on its way up."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
            path.unlink()
