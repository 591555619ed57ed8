"""Whose `output_dir` this is: an adaptation claims its folder before writing anything, and gives it back on failure.

The claim is the manifest `.hrm-adapt.json`: what the adaptation was asked (checkpoint, tasks, the settings that
change its result), its status (`running` until `results.json` is written, then `complete`) and the process
that runs it. The rule, as the dataset builders' for their output folders:

- a new or empty folder is claimed;
- a folder holding files and no manifest is someone else's (a user's own `results.json`, `submission.json`,
  another tool's output): refused, nothing touched;
- a folder of another adaptation (another request): refused, nothing touched;
- the same request, complete: refused (its results are there); still running in a live process: refused;
- the same request left unfinished by a killed process: its files are removed and the adaptation starts again.

On an error or an interrupt the adaptation removes the files it wrote (names it writes, never others), so a
folder never holds a half-trained adaptation that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from hrm.atomic import atomic_write_text
from hrm.errors import ConfigError, one_line

logger = logging.getLogger(__name__)

MANIFEST = ".hrm-adapt.json"
# What adapt.py (its set builder, trainer and evaluator) writes into output_dir, temporaries included.
_OWN_NAMES = re.compile(
    r"^(data|source|all_config\.yaml|results\.json|submission(\.[\w-]+)?\.json|\.adapt_initial_weights|\.hrm_run\.lock"
    r"|step_\d+(_all_preds\.\d+)?|train_state_\d+|\.train_state_\d+\.partial|\.data\.(partial|old)-.+|\..+\.tmp)$"
)


def _host() -> str:
    return socket.gethostname()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("request"), dict) else None


def _write_manifest(folder: Path, request: dict[str, Any], status: str) -> None:
    record = {"written_by": "hrm adapt.py", "status": status, "pid": os.getpid(), "host": _host(), "request": request}
    atomic_write_text(folder / MANIFEST, json.dumps(record, indent=1))


def _difference(there: dict[str, Any], here: dict[str, Any]) -> str:
    """The first keys whose values differ, e.g. `tasks=/a there, /b here`."""
    keys = [key for key in dict.fromkeys([*there, *here]) if there.get(key) != here.get(key)]
    return "; ".join(f"{key}={there.get(key)} there, {here.get(key)} here" for key in keys[:2])


def _own_entries(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if _OWN_NAMES.match(entry.name)]


def _remove(entries: list[Path]) -> None:
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


class RunFolder:
    """The claimed `output_dir` of one adaptation (rank 0 claims, marks complete, and cleans up)."""

    def __init__(self, path: str | Path, request: dict[str, Any]):
        self.path = Path(path)
        self.request = request
        self.created = False
        self.claimed = False

    def check(self) -> None:
        """Refuse (one-line ConfigError) a folder this adaptation may not write; touches nothing."""
        label = f"output_dir={self.path}"
        for ancestor in reversed(self.path.parents):
            if ancestor.exists() and not ancestor.is_dir():
                raise ConfigError(f"{label} is inside {ancestor}, which is a file; choose a folder path")
        if not self.path.exists():
            return
        if not self.path.is_dir():
            raise ConfigError(f"{label} is a file; choose a new folder (nothing was changed)")
        manifest = read_manifest(self.path)
        if manifest is None:
            entries = sorted(entry.name for entry in self.path.iterdir())
            if entries:
                raise ConfigError(
                    f"{label} holds files adapt.py did not write ({', '.join(entries[:3])}"
                    f"{', ...' if len(entries) > 3 else ''}); choose a new or empty folder (nothing was changed)"
                )
            return
        if manifest["request"] != self.request:
            raise ConfigError(
                f"{label} holds another adaptation ({_difference(manifest['request'], self.request)}); choose a new "
                "output_dir (nothing was changed)"
            )
        if manifest.get("status") == "complete":
            raise ConfigError(
                f"{label} already holds this adaptation, finished (results in {self.path / 'results.json'}); to run it "
                "again choose a new output_dir or delete the folder"
            )
        pid = manifest.get("pid")
        if manifest.get("host") == _host() and isinstance(pid, int) and _alive(pid):
            raise ConfigError(
                f"{label} is in use by another adaptation (pid {pid}); wait for it to end or choose a new output_dir"
            )

    def claim(self) -> None:
        """Take the folder: clear what an unfinished earlier run of the same request left, write the manifest."""
        self.check()
        try:
            if self.path.is_dir():
                leftovers = _own_entries(self.path)
                if leftovers:
                    logger.warning(
                        "%s holds an unfinished run of this adaptation (its process is gone): starting again", self.path
                    )
                    _remove([entry for entry in leftovers if entry.name != MANIFEST])
            else:
                self.path.mkdir(parents=True)
                self.created = True
            _write_manifest(self.path, self.request, "running")
        except OSError as err:
            raise ConfigError(f"cannot write into output_dir={self.path} ({one_line(err)})") from None
        self.claimed = True

    def complete(self) -> None:
        with contextlib.suppress(OSError):
            _write_manifest(self.path, self.request, "complete")

    def remove_partial(self) -> None:
        """Remove every file this adaptation wrote (the folder too if it made it and nothing else is in it)."""
        if not self.claimed or not self.path.is_dir():
            return
        entries = _own_entries(self.path)
        _remove([entry for entry in entries if entry.name != MANIFEST])
        with contextlib.suppress(OSError):
            (self.path / MANIFEST).unlink()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()
        self.claimed = False
