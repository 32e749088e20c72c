"""Files we write get the modes the user's umask gives a new file (0644 and 0755 under the usual 022).

Writers that stage a file before renaming it into place (`tempfile.mkstemp`, and transformers 5 for
`model.safetensors`) create it 0600, so a model saved in a shared folder could not be loaded by the other users.
"""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process's umask: from /proc on Linux; elsewhere by setting it and putting it straight back (a moment in
    which another thread's new file would get 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def give_default_modes(path: str | os.PathLike[str]) -> None:
    """`path` (a file, or a folder and everything under it) with the modes a new file or folder gets here."""
    mask = current_umask()
    root = Path(path)
    if root.is_file():
        root.chmod(0o666 & ~mask)
        return
    for folder, _, files in os.walk(root):
        Path(folder).chmod(0o777 & ~mask)
        for name in files:
            file = Path(folder) / name
            if not file.is_symlink():
                file.chmod(0o666 & ~mask)
