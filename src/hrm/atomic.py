"""Writing a file so that readers see the old file or the new one, never half of one.

The bytes go to a hidden temporary file beside the target, are flushed to disk, and the temporary file is
renamed over the target. `tempfile.mkstemp` creates files readable by their owner only (0600); the file is
given the mode an ordinary `open` would give it (0666 less the process's umask), so a teammate can read a
shared run's checkpoints, configs and results as the user's umask allows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but brief)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(file_object)` on a temporary file beside `path`, then rename it into place.

    The parent folders are created; on any failure (disk full, Ctrl-C) the temporary file is removed and an
    existing `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):  # not on Windows, where files take the folder's permissions
            os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda handle: handle.write(data))
