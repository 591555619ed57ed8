"""What every command shares: reading `key=value` arguments, refusing an output that would overwrite an
input, and turning any failure into one line on stderr and an exit status.

Arguments are split at their first `=`, so a value may itself hold `=` (`output=runs/lr=1e-4/results.json`)
and any character the shell passes on (non-ASCII paths work as typed). A key whose value is a path or a name
(typed `str`) keeps the value verbatim; other values are read as YAML (`[4,8]`, `true`, `1e-4`, `null`). A
value with spaces, `*`, `$` or `;` needs the shell's quotes around the whole argument:
`'output=my runs/results.json'`.

Exit statuses: 0 success, 2 a problem the message names (bad input, a full disk, out of memory), 130 stopped
by Ctrl-C (128 + SIGINT).
"""

from __future__ import annotations

import fnmatch
import logging
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel

from hrm.errors import ConfigError, HRMError, Interrupted, error_line, one_line

INTERRUPTED_EXIT = 130  # the shell's status for a command stopped by Ctrl-C (128 + SIGINT)
ERROR_EXIT = 2

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Argument:
    """One `key=value` argument: `key` without Hydra's leading `+`/`++`, `value` as typed, `text` the whole."""

    key: str
    value: str
    text: str


def split_arguments(argv: Sequence[str], example: str) -> list[Argument]:
    """Each argument split at its first `=`; one without `=` is a ConfigError showing `example`."""
    arguments = []
    for text in argv:
        key, sep, value = text.partition("=")
        if not sep or not key.lstrip("+"):
            raise ConfigError(f"argument {text!r} is not of the form key=value (e.g. {example})")
        arguments.append(Argument(key.lstrip("+"), value, text))
    return arguments


def _is_text(annotation: Any) -> bool:
    """`str` or `str | None`: a field whose value is kept verbatim."""
    if annotation is str:
        return True
    args = typing.get_args(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    return union and set(args) <= {str, type(None)} and str in args


def read_values(arguments: Iterable[Argument], model: type[BaseModel]) -> dict[str, Any]:
    """The values of `arguments` for the fields of `model` (not yet validated): text fields verbatim, the
    others parsed as YAML; a value YAML cannot read is a ConfigError."""
    values: dict[str, Any] = {}
    parsed: list[str] = []
    for argument in arguments:
        field = model.model_fields.get(argument.key)
        if field is not None and _is_text(field.annotation):
            values[argument.key] = argument.value
        else:
            parsed.append(f"{argument.key}={argument.value}")
    try:
        values.update(OmegaConf.to_container(OmegaConf.from_dotlist(parsed), resolve=True))
    except (OmegaConfBaseException, yaml.YAMLError) as err:
        raise ConfigError(
            f"cannot parse arguments: {one_line(err)} (quote a value with spaces or brackets: 'key=value')"
        ) from None
    return values


# ---------------------------------------------------------------- outputs that are inputs


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs_are_not_inputs(
    files: Mapping[str, str | Path],
    folders: Mapping[str, str | Path] | None = None,
    *,
    input_files: Mapping[str, str | Path] | None = None,
    input_folders: Mapping[str, str | Path] | None = None,
    folder_writes: Sequence[str] | None = None,
) -> None:
    """Refuse, before any work, an output that would overwrite something this run reads or writes elsewhere.

    `files` and `folders` are the outputs (label -> path, the label as the user typed it, e.g.
    `output=results.json`); `input_files` are read files (a checkpoint, its all_config.yaml), `input_folders`
    read folders (datasets). Paths are compared after resolving symlinks. Refused: an output that is an input
    or lies inside an input folder; an output folder holding an input where it writes (`folder_writes`: glob
    patterns of the top-level names the folders' command writes; None: anywhere in it); two outputs of the
    same path. One-line ConfigError naming both.
    """
    inputs = [(label, _resolved(path), False) for label, path in (input_files or {}).items()]
    inputs += [(label, _resolved(path), True) for label, path in (input_folders or {}).items()]
    outputs = [(label, _resolved(path), False) for label, path in files.items()]
    outputs += [(label, _resolved(path), True) for label, path in (folders or {}).items()]
    seen: dict[Path, str] = {}
    for label, path, is_folder in outputs:
        for input_label, source, source_is_folder in inputs:
            if (
                path == source
                or (source_is_folder and _within(path, source))
                or (is_folder and _writes_over(path, source, folder_writes))
            ):
                raise ConfigError(
                    f"{label} would overwrite {input_label} ({source}), which this command reads; "
                    "choose an output path outside it"
                )
        if path in seen:
            raise ConfigError(f"{label} and {seen[path]} name the same path {path}; give each output its own")
        seen[path] = label


def _writes_over(folder: Path, source: Path, writes: Sequence[str] | None) -> bool:
    if folder not in source.parents:
        return False
    top = source.relative_to(folder).parts[0]
    return writes is None or any(fnmatch.fnmatch(top, pattern) for pattern in writes)


# ---------------------------------------------------------------- failures as one line


_ALLOCATION_FAILED = ("out of memory", "can't allocate memory", "could not allocate", "failed to allocate")


def is_out_of_memory(err: BaseException) -> bool:
    """An allocation failure: torch's OutOfMemoryError (CUDA, MPS), Python's MemoryError, or the RuntimeError
    torch's CPU allocator raises ("DefaultCPUAllocator: can't allocate memory")."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(err, getattr(torch, "OutOfMemoryError", ())):
        return True
    if isinstance(err, MemoryError):
        return True
    return isinstance(err, RuntimeError) and any(text in str(err).lower() for text in _ALLOCATION_FAILED)


_TRIED = re.compile(r"tried to allocate ([^.;(]+(?:\.\d+ ?[KMGT]i?B)?)", re.IGNORECASE)


def out_of_memory_line(err: BaseException, settings: str | None) -> str:
    """`error: out of memory on the GPU (could not allocate 2.00 GiB); lower <settings> and run again`."""
    text = one_line(err)
    where = "on the GPU" if "CUDA" in text else "on the Apple GPU" if "MPS" in text else "on the CPU"
    if isinstance(err, MemoryError) or "CPUAllocator" in text:
        where = "on the CPU"
    tried = _TRIED.search(str(err))
    detail = f" (could not allocate {tried.group(1).strip()})" if tried else ""
    advice = f"lower {settings} and run again" if settings else "free memory (close other jobs) and run again"
    return f"error: out of memory {where}{detail}; {advice}"


def run_command(
    body: Callable[[], int | None],
    *,
    memory_settings: str | None,
    interrupted: str = "interrupted (Ctrl-C); nothing was half-written",
) -> int:
    """Run a command's body and return its exit status, every failure as one `error:` line on stderr.

    Our errors (HRMError) and system errors (OSError: a full disk, permissions) exit 2, out of memory exits 2
    with advice to lower `memory_settings` (e.g. "batch_size"), Ctrl-C exits 130 with `interrupted`
    (an `Interrupted` error carries its own message).
    """
    try:
        return body() or 0
    except Interrupted as err:
        print(error_line(err), file=sys.stderr)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return INTERRUPTED_EXIT
    except (HRMError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return ERROR_EXIT
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        print(out_of_memory_line(err, memory_settings), file=sys.stderr)
        return ERROR_EXIT
