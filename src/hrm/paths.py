"""Checking where a command will write before it starts working, so a bad path costs no compute."""

from __future__ import annotations

import os
import re
from pathlib import Path

from hrm.errors import ConfigError

# The weights of one step: `step_N` (HRM, TRM, ours) or URM's `step_N.pt`; group 1 is the step.
STEP_FILE = re.compile(r"^step_(\d+)(?:\.pt)?$")


def _check_ancestors(path: Path, label: str) -> None:
    """No folder above `path` is a file, and the nearest existing one can be written into."""
    nearest = None
    for ancestor in reversed(path.absolute().parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise ConfigError(f"{label} is inside {ancestor}, which is a file; choose another path")
        if ancestor.is_dir():
            nearest = ancestor
    if nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"{label}: {nearest} is not writable (permission denied); choose another path")


def check_output_file(path: str | Path, label: str) -> Path:
    """`path` can become a file: it is not a folder and no folder above it is a file (one-line ConfigError).
    `label` names the path in the message, e.g. `output=results`."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{label} is a folder; give a file name, e.g. {path / 'results.json'}")
    _check_ancestors(path, label)
    return path


def check_output_folder(path: str | Path, label: str) -> Path:
    """`path` can become a folder: it is not a file and no folder above it is a file (one-line ConfigError)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{label} is a file; give a folder (it is created if missing)")
    if path.is_dir() and not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{label} is not writable (permission denied); choose another folder")
    _check_ancestors(path, label)
    return path
