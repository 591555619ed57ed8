"""`dataset.json`: the metadata of one split of a puzzle dataset (spec section 1)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from hrm.errors import DatasetError


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
    sets: list[str]

    @classmethod
    def load(cls, split_dir: str | Path) -> "PuzzleDatasetMetadata":
        path = Path(split_dir) / "dataset.json"
        if not path.is_file():
            raise DatasetError(f"no dataset metadata at {path}; build the dataset first (see dataset/) or fix data_path")
        try:
            return cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError, TypeError) as err:
            first = str(err).splitlines()[0]
            raise DatasetError(f"{path} is not valid dataset metadata ({first})") from None

    def model_shapes(self) -> dict[str, int]:
        """The sizes a model takes from its data: vocab_size, seq_len, num_puzzle_identifiers."""
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_puzzle_identifiers": self.num_puzzle_identifiers}

    def to_json(self) -> str:
        return json.dumps(self.model_dump(), indent=2)
