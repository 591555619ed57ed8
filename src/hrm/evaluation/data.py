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
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch

from hrm.data.combined import read_combined_identifiers, read_splits
from hrm.data.format import PuzzleSet
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
    """The test split of the dataset(s) a checkpoint is scored on; several (TRM's `data_paths`) are combined
    as in training: identifiers stacked, set `S` of dataset i named `S<i>`."""

    data_paths: list[str]
    metadata: PuzzleDatasetMetadata
    sets: dict[str, PuzzleSet]
    identifier_names: list[str] | None  # identifiers.json (stacked over the datasets), when present
    identifier_paths: list[str] | None = None  # the training datasets whose table the ids index (read_splits)

    @property
    def name(self) -> str:
        """The dataset folder(s), for messages."""
        return ", ".join(self.data_paths)


def load_test_split(
    data_paths: str | Path | Sequence[str | Path], identifier_paths: Sequence[str] | None = None
) -> TestSplit:
    """Open the `test` split of one dataset folder or several (memory-mapped); a missing or malformed split is a
    one-line DatasetError. `identifier_paths`: the training datasets, when these are some of them."""
    paths = [str(data_paths)] if isinstance(data_paths, (str, Path)) else [str(path) for path in data_paths]
    for path in paths:
        if not (Path(path) / "test").is_dir():
            raise DatasetError(
                f"no test split at {Path(path) / 'test'}; build the dataset or pass data_path=<dataset folder>"
            )
    metadata, sets = read_splits(paths, "test", identifier_paths=identifier_paths)
    try:
        names = read_combined_identifiers(identifier_paths or paths)
    except DatasetError:
        names = None
    return TestSplit(paths, metadata, sets, names, list(identifier_paths) if identifier_paths else None)


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
            dataset_path=split.data_paths[0],
            dataset_paths=split.data_paths,
            identifier_paths=split.identifier_paths,
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
