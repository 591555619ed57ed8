"""`dataset.json`: the metadata of one split of a puzzle dataset."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hrm.errors import DatasetError, one_line


def _first_problem(err: ValidationError) -> str:
    """The first field error of a validation, naming the field (pydantic's own first line names only the class)."""
    problem = err.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "?"
    if problem["type"] == "missing":
        return f"the field {field!r} is missing"
    return f"the field {field!r}: {problem['msg'].lower()} (got {problem.get('input')!r})"


class PuzzleDatasetMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    pad_id: int
    ignore_label_id: int | None
    blank_identifier_id: int
    vocab_size: int
    seq_len: int
    num_puzzle_identifiers: int
    total_groups: int
    mean_puzzle_examples: float
    # TRM's and URM's loaders read it (the puzzles of all sets of the split, as TRM's builders count them);
    # HRM's files lack it, so it is optional on read and filled in when a split is written.
    total_puzzles: int | None = None
    sets: list[str]

    @classmethod
    def load(cls, split_dir: str | Path) -> "PuzzleDatasetMetadata":
        path = Path(split_dir) / "dataset.json"
        if not path.is_file():
            raise DatasetError(
                f"no dataset metadata at {path}; build the dataset first (see dataset/) or fix data_path"
            )
        try:
            data = json.loads(path.read_text())
        except (ValueError, OSError) as err:
            raise DatasetError(f"{path} is not readable JSON ({one_line(err)}); rebuild the dataset") from None
        if not isinstance(data, dict):
            raise DatasetError(f"{path} must hold a JSON object of dataset metadata, found {type(data).__name__}")
        try:
            return cls(**data)
        except ValidationError as err:
            raise DatasetError(f"{path} is not valid dataset metadata: {_first_problem(err)}") from None

    def model_shapes(self) -> dict[str, int]:
        """The sizes a model takes from its data: vocab_size, seq_len, num_puzzle_identifiers."""
        return {
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "num_puzzle_identifiers": self.num_puzzle_identifiers,
        }

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)
