"""What the fault tests share: a fingerprint of the user's files, to prove a failed command left them intact."""

from __future__ import annotations

import hashlib
from pathlib import Path


def hashes(*roots: Path) -> dict[str, str]:
    """The sha256 of every file under `roots` (a file root hashes itself)."""
    found = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found
