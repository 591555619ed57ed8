"""Reading ARC JSON files: task files and Kaggle `*_challenges.json` / `*_solutions.json`, shared by the ARC builder
and test-time adaptation, so both refuse the same malformed files with the same one-line errors.

`json.loads` keeps the last of two equal keys without a word: a challenges file that lists a task id twice would
lose a task (or pair it with the wrong solutions), so a repeated key anywhere is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hrm.errors import DatasetError


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _RepeatedKey(key)
        result[key] = value
    return result


def read_json(path: str | Path) -> Any:
    """A JSON file as Python values; undecodable bytes, invalid JSON or a repeated key are one-line errors."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: byte {err.start} is not UTF-8; a task file must be JSON text") from None
    except OSError as err:
        raise DatasetError(f"cannot read {path} ({err.strerror or err})") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as err:
        raise DatasetError(
            f"{path}: the key {err.key!r} appears twice in one JSON object (a task id listed twice?); "
            "the second would silently replace the first, so remove or rename one"
        ) from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def solutions_path(challenges: Path) -> Path:
    return challenges.with_name(challenges.name.replace("_challenges.json", "_solutions.json"))


def read_challenges(path: Path) -> dict[str, Any]:
    """A Kaggle challenges file: task id -> task with a `test` list of inputs (the tasks are checked later)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: a Kaggle challenges file maps task ids to tasks, found {type(data).__name__}")
    for name, task in data.items():
        if not isinstance(task, dict) or not isinstance(task.get("test"), list):
            raise DatasetError(f"{path}: task {name} needs 'train' and 'test' lists of pairs")
    return data


def read_solutions(path: Path, challenges: dict[str, Any], required: bool) -> dict[str, list]:
    """A Kaggle solutions file checked against its challenges: per task id a list of output grids, one per test
    input. `required`: every task must have its entry (a dataset build); otherwise missing entries are unknown."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: a Kaggle solutions file maps task ids to lists of grids, found {type(data).__name__}"
        )
    for name, task in challenges.items():
        if name not in data:
            if required:
                raise DatasetError(f"{path}: task {name} needs one solution per test input (it has none)")
            continue
        entry, inputs = data[name], len(task["test"])
        if not isinstance(entry, list):
            raise DatasetError(
                f"{path}: the entry of task {name} is a {_kind(entry)}; it must be a list of output grids, "
                f"one per test input ({inputs})"
            )
        if len(entry) != inputs:
            raise DatasetError(
                f"{path}: task {name} has {len(entry)} solution(s) for {inputs} test input(s); give one output grid "
                "per test input"
            )
    return data


def _kind(value: Any) -> str:
    return {dict: "JSON object", str: "string", bool: "boolean", int: "number", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )
