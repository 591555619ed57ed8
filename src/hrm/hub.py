"""Checkpoints on the Hugging Face Hub: `hf://owner/repo[/subfolder][@revision]`.

The repo's weights (`step_N` files, or the single `checkpoint` file of the published HRM repos) and its
`all_config.yaml` are fetched with `huggingface_hub` into its cache, and the local file is returned, so
everything that takes a checkpoint path takes a Hub repo. With `HF_HUB_OFFLINE=1` a cached repo works
and a missing one is a one-line error.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from hrm.errors import CheckpointError, one_line
from hrm.paths import STEP_FILE

logger = logging.getLogger(__name__)

PREFIX = "hf://"
CONFIG_FILE = "all_config.yaml"
PUBLISHED_WEIGHTS_FILE = "checkpoint"  # the name the published HRM repos use
TRUE_VALUES = ("1", "true", "yes", "on")  # how huggingface_hub reads HF_HUB_OFFLINE


def in_hub_cache(path: str | Path) -> bool:
    """Whether `path` lies in the Hugging Face cache, where only the Hub's own downloads belong."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    cache = Path(constants.HF_HUB_CACHE).expanduser().resolve()
    return cache in Path(path).expanduser().resolve().parents


def is_hub_path(path: object) -> bool:
    return isinstance(path, str) and path.startswith(PREFIX)


_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")  # an owner or repo name on the Hub


def parse_hub_path(path: str) -> tuple[str, str, str | None]:
    """(repo_id, subfolder, revision) of `hf://owner/repo[/subfolder][@revision]`; a name the Hub would
    reject (spaces, `..`, characters other than letters, digits, `-`, `_`, `.`) is a one-line CheckpointError."""
    spec, _, revision = path[len(PREFIX) :].partition("@")
    parts = [part for part in spec.split("/") if part]
    form = "write hf://owner/repo (optionally /subfolder and @revision)"
    if len(parts) < 2:
        raise CheckpointError(f"{path!r} is not a Hub checkpoint; {form}")
    for name in parts[:2]:
        if not _NAME.match(name) or ".." in name or "--" in name:
            raise CheckpointError(
                f"{path!r}: {name!r} is not a valid Hub owner or repo name (letters, digits, '-', '_' and '.', "
                f"without '--' or '..', at most 96 characters); {form}"
            )
    bad = [part for part in parts[2:] if part in (".", "..") or not part.isprintable() or part != part.strip()]
    if bad:
        raise CheckpointError(f"{path!r}: {bad[0]!r} is not a subfolder name; {form}")
    if revision and (".." in revision or any(c.isspace() for c in revision) or not revision.isprintable()):
        raise CheckpointError(f"{path!r}: {revision!r} is not a branch, tag or commit; {form}")
    return "/".join(parts[:2]), "/".join(parts[2:]), revision or None


def download_checkpoint(path: str) -> Path:
    """The local weights file of a Hub checkpoint (the latest `step_N`, else `checkpoint`), with its config beside it."""
    repo_id, subfolder, revision = parse_hub_path(path)
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            HFValidationError,
            LocalEntryNotFoundError,
            OfflineModeIsEnabled,
        )
    except ImportError:
        raise CheckpointError(f"{path}: Hub checkpoints need huggingface_hub (pip install huggingface_hub)") from None
    prefix = f"{subfolder}/" if subfolder else ""
    try:
        local = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[f"{prefix}{CONFIG_FILE}", f"{prefix}step_*", f"{prefix}{PUBLISHED_WEIGHTS_FILE}"],
            ignore_patterns=[f"{prefix}step_*_*"],
        )  # not the saved evaluation outputs
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in TRUE_VALUES:
            reason, advice = (
                "HF_HUB_OFFLINE is set (offline)",
                "download it once with network access, or unset HF_HUB_OFFLINE",
            )
        else:
            reason, advice = "the Hub cannot be reached (offline?)", "download it once with network access"
        raise CheckpointError(
            f"{path}: the repo {repo_id} is not in the Hugging Face cache and {reason}; {advice}"
        ) from None
    except HFValidationError as err:
        raise CheckpointError(f"{path}: the Hub rejects this name ({one_line(err)})") from None
    except HfHubHTTPError as err:
        raise CheckpointError(
            f"{path}: cannot download {repo_id} from the Hugging Face Hub ({one_line(err)})"
        ) from None
    folder = Path(local) / subfolder
    steps = [(int(m.group(1)), p) for p in folder.glob("step_*") if (m := STEP_FILE.match(p.name)) and p.is_file()]
    weights = max(steps)[1] if steps else folder / PUBLISHED_WEIGHTS_FILE
    if not weights.is_file() or not (folder / CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{path}: {repo_id} holds no step_N (or {PUBLISHED_WEIGHTS_FILE}) file with an {CONFIG_FILE} beside it"
            + (f" in {subfolder}/" if subfolder else "")
        )
    logger.info("%s -> %s", path, weights)
    return weights
