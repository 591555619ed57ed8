"""Build an output folder beside its target, then move it in, replacing only what an earlier build wrote.

The rule every dataset builder follows (see docs/datasets.md, "Builder output folders"):

- `--output-dir` that does not exist, or an empty folder: the build is staged in a hidden folder
  `.NAME.partial-HOST-PID` beside it and renamed into place when complete.
- An earlier build (it holds the manifest `.hrm-build.json` listing the files that build wrote, or, for
  builds made before the manifest existed, files the caller recognises as its own): the files that build
  wrote are replaced by the new ones; every other file in the folder (notes, results) is kept.
- Anything else (a file, a folder holding other files): refused with a one-line error before any work.

Staging folders are owned by the process named in their name: an error, Ctrl-C or SIGTERM removes them, and
one left by a killed process (SIGKILL, power loss) is removed by the next build into the same target.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

from hrm.atomic import atomic_write_text
from hrm.errors import DatasetError, one_line

logger = logging.getLogger(__name__)

MANIFEST = ".hrm-build.json"
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)$")

# recognise(folder) -> relative paths of the files an earlier build (without a manifest) wrote there, or None
Recogniser = Callable[[Path], "list[str] | None"]


class Terminated(BaseException):
    """SIGTERM arrived while a build was staged; raised so that the staging folder is cleaned up."""


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of an earlier process that had our PID
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(target: Path) -> list[Path]:
    """Remove staging folders of `target` left by builds on this host whose process is gone; return them."""
    parent = target.parent
    if not parent.is_dir():
        return []
    removed = []
    host = _host()
    for entry in parent.iterdir():
        match = _LEFTOVER.match(entry.name)
        if match is None or match["name"] != target.name or not entry.is_dir():
            continue
        if match["host"] not in (None, host):
            logger.warning("leaving %s: it belongs to a build on host %s", entry, match["host"])
            continue
        if _process_alive(int(match["pid"])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed %s, left by an interrupted build (process %s)", entry, match["pid"])
        removed.append(entry)
    return removed


def read_manifest(folder: Path) -> list[str] | None:
    """The files an earlier build listed in `folder`'s manifest, or None without a readable manifest."""
    try:
        data = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and _is_relative(f) for f in files):
        return None
    return files


def _is_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def check_output_dir(target: str | Path, recognise: Recogniser | None = None) -> list[str] | None:
    """Refuse (one-line DatasetError) a target that is not ours to write; return the files an earlier build
    wrote there (`[]` for an empty folder, None when the target does not exist yet)."""
    target = Path(target)
    for ancestor in reversed(target.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise DatasetError(f"--output-dir {target} is inside {ancestor}, which is a file; choose a folder path")
    if not target.exists():
        return None
    if not target.is_dir():
        raise DatasetError(f"--output-dir {target} is a file; choose a new folder name")
    owned = read_manifest(target)
    if owned is None and recognise is not None:
        owned = recognise(target)
    if owned is not None:
        return [name for name in owned if (target / name).is_file()]
    if any(entry.name != MANIFEST for entry in target.iterdir()):
        raise DatasetError(
            f"--output-dir {target} holds files that no dataset build wrote; "
            "choose a new or empty folder (nothing was changed)"
        )
    return []


def _files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)


def _remove_empty_dirs(root: Path, names: list[str]) -> None:
    """Remove the folders that held `names` once they are empty (never `root`, never a non-empty one)."""
    folders = {parent for name in names for parent in PurePosixPath(name).parents if str(parent) != "."}
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):
            (root / folder).rmdir()


def _clash(target: Path, name: str, owned: set[str]) -> Path | None:
    """A path that writing `target/name` would replace although no earlier build wrote it."""
    path = target / name
    if path.is_dir() and not path.is_symlink():
        return path
    for candidate in [path, *path.parents]:
        if candidate == target:
            return None
        if (candidate.is_file() or candidate.is_symlink()) and candidate.relative_to(target).as_posix() not in owned:
            return candidate
    return None


def _commit(stage: Path, target: Path, owned: list[str], trash: Path) -> None:
    """Move the staged files into an existing `target`, first moving the earlier build's `owned` files to `trash`;
    on failure the earlier build is put back."""
    new = _files_under(stage)
    for name in new:
        clash = _clash(target, name, set(owned))
        if clash is not None:
            raise DatasetError(
                f"{clash} is in the way of the new build and no build wrote it; "
                "move it away or choose a new --output-dir (nothing was changed)"
            )
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in owned:
            (trash / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / name, trash / name)
            moved_out.append(name)
        for name in new:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / name, target / name)
            moved_in.append(name)
        _write_manifest(target, new)
    except BaseException:
        for name in moved_in:
            with contextlib.suppress(OSError):
                os.replace(target / name, stage / name)
        for name in moved_out:
            with contextlib.suppress(OSError):
                os.replace(trash / name, target / name)
        raise
    _remove_empty_dirs(target, [name for name in owned if name not in set(new)])


def _write_manifest(folder: Path, files: list[str]) -> None:
    atomic_write_text(folder / MANIFEST, json.dumps({"written_by": "hrm dataset builder", "files": files}, indent=1))


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While staging, SIGTERM raises `Terminated` so that cleanup runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def staged_output(target: str | Path, recognise: Recogniser | None = None) -> Iterator[Path]:
    """Yield an empty staging folder for a build of `target`; on success its files replace the earlier
    build's files in `target` (other files stay), on any error or signal nothing in `target` changes."""
    target = Path(target)
    check_output_dir(target, recognise)
    placed = target.absolute()  # `--output-dir .` stages beside the current folder, not inside it
    clean_leftovers(placed)
    tag = f"{_host()}-{os.getpid()}"
    stage = placed.parent / f".{placed.name}.partial-{tag}"
    trash = placed.parent / f".{placed.name}.old-{tag}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir()
    except OSError as err:
        raise DatasetError(f"cannot create {stage}: {one_line(err)}; choose another --output-dir") from None
    try:
        with _sigterm_raises():
            yield stage
            owned = check_output_dir(target, recognise)  # the folder may have changed while we built
            if owned is None:
                _write_manifest(stage, _files_under(stage))
                os.replace(stage, target)
            else:
                _commit(stage, target, owned, trash)
    except OSError as err:
        raise DatasetError(
            f"writing {target} failed: {one_line(err)}; free space or choose another --output-dir "
            "(the staged files were removed)"
        ) from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        shutil.rmtree(trash, ignore_errors=True)
