"""One training run per checkpoint folder: an exclusive lock that rank 0 holds while it trains.

The lock is an `fcntl.flock` on `<checkpoint_path>/.hrm_run.lock`. The kernel drops it when the holder exits,
however it dies (even SIGKILL), so a stale lock never blocks a later run; the file only records who holds it
(pid, host, start time) for the error message, and is removed when the run ends (with the folder itself
if the lock created it and the run wrote nothing into it, e.g. when it failed before training).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from hrm.errors import CheckpointError

LOCK_FILE = ".hrm_run.lock"


class RunLock:
    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None
        self._created_folder = False

    def acquire(self) -> None:
        """Take the lock, or raise a one-line CheckpointError naming the run that holds it."""
        self._created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 512).decode(errors="replace").strip() or "unknown process"
                os.close(fd)
                raise CheckpointError(
                    f"checkpoint_path={self.path.parent} is in use by another training run ({holder}); wait for it to end "
                    "or stop it, or choose another checkpoint_path"
                ) from None
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:  # not a file that the previous holder unlinked while we waited for it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(
            fd, f"pid {os.getpid()} on {socket.gethostname()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        )
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
            if self._created_folder and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()
        finally:
            os.close(self._fd)
            self._fd = None
