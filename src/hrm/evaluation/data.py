"""The test split as the evaluator reads it, with every row's example index.

`halt=max` runs the data team's `PuzzleDataset` test iterator (the batches the trainer evaluates on,
padded like the original's, rank r taking its contiguous slice of each global batch); `indexed_batches`
adds each row's example index (-1 for padding), which voting and the distributed gathering need.
The loops that schedule examples themselves (`halt=act`, Augmented HRM) read rows on demand through
`ExampleSource`, over the same rows a rank gets in `halt=max` (`rank_rows`), without padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np
import torch

from hrm.data.format import PuzzleSet, read_identifiers, read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig
from hrm.errors import DatasetError
from hrm.models.losses import IGNORE_LABEL_ID

Batch = dict[str, torch.Tensor]


class Examples(Protocol):
    """Rows to evaluate, fetched on demand: `len()` and `gather(positions) -> batch dict`."""

    def __len__(self) -> int: ...

    def gather(self, positions: torch.Tensor) -> Batch: ...


class TensorExamples:
    """Examples already in memory as a batch dict."""

    def __init__(self, batch: Batch):
        self.batch = batch

    def __len__(self) -> int:
        return int(self.batch["inputs"].shape[0])

    def gather(self, positions: torch.Tensor) -> Batch:
        return {key: value[positions] for key, value in self.batch.items()}


class ExampleSource:
    """Rows `rows` of one set of the split (memory-mapped), as int32 batches with labels -100 where ignored."""

    def __init__(self, puzzle_set: PuzzleSet, metadata: PuzzleDatasetMetadata, rows: np.ndarray):
        self.puzzle_set = puzzle_set
        self.metadata = metadata
        self.rows = np.asarray(rows, dtype=np.int64)
        self.example_puzzles = puzzle_set.example_puzzle_ids()

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def gather(self, positions: torch.Tensor) -> Batch:
        ids = self.rows[np.asarray(positions, dtype=np.int64)]
        labels = np.asarray(self.puzzle_set.labels[ids], dtype=np.int32)
        if self.metadata.ignore_label_id is not None:
            labels[labels == self.metadata.ignore_label_id] = IGNORE_LABEL_ID
        return {
            "inputs": torch.from_numpy(np.asarray(self.puzzle_set.inputs[ids], dtype=np.int32)),
            "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(
                np.asarray(self.puzzle_set.puzzle_identifiers[self.example_puzzles[ids]], dtype=np.int32)
            ),
        }


@dataclass
class TestSplit:
    data_path: str
    metadata: PuzzleDatasetMetadata
    sets: dict[str, PuzzleSet]
    identifier_names: list[str] | None  # identifiers.json, when present


def load_test_split(data_path: str | Path) -> TestSplit:
    """Open `<data_path>/test` (memory-mapped); a missing or malformed split is a one-line DatasetError."""
    if not (Path(data_path) / "test").is_dir():
        raise DatasetError(
            f"no test split at {Path(data_path) / 'test'}; build the dataset or pass data_path=<dataset folder>"
        )
    metadata, sets = read_split(data_path, "test")
    try:
        names = read_identifiers(data_path)
    except DatasetError:
        names = None
    return TestSplit(str(data_path), metadata, sets, names)


def local_slice(start: int, end: int, global_batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows of the global batch `[start, end)` that belong to `rank` (possibly none)."""
    local = global_batch_size // world_size
    lo = start + rank * local
    return min(lo, end), min(lo + local, end)


def rank_rows(num_examples: int, global_batch_size: int, rank: int, world_size: int) -> np.ndarray:
    """The example indices `rank` evaluates: its slice of every global batch, as in the test iterator."""
    rows = [
        np.arange(
            *local_slice(start, min(num_examples, start + global_batch_size), global_batch_size, rank, world_size)
        )
        for start in range(0, num_examples, global_batch_size)
    ]
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, dtype=np.int64)


def indexed_batches(
    split: TestSplit, global_batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[tuple[str, Batch, int, np.ndarray]]:
    """The test iterator's `(set_name, batch, global effective batch size)` plus each row's example index."""
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=0,
            dataset_path=split.data_path,
            global_batch_size=global_batch_size,
            test_set_mode=True,
            epochs_per_iter=1,
            rank=rank,
            num_replicas=world_size,
        ),
        split="test",
    )
    local = global_batch_size // world_size
    starts: dict[str, int] = {}
    for set_name, batch, effective in dataset:
        start = starts.get(set_name, 0)
        starts[set_name] = start + global_batch_size
        lo, hi = local_slice(start, start + effective, global_batch_size, rank, world_size)
        index = np.full(local, -1, dtype=np.int64)
        index[: hi - lo] = np.arange(lo, hi)
        yield set_name, batch, effective, index
