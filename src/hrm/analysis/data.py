"""Puzzles to analyse: examples of a dataset split (read with `format.read_split`), or one typed as a string.

Inputs and labels are memory-mapped and only the requested examples are read, so picking a few puzzles
from a large test split is instant; labels equal to `ignore_label_id` become -100 as in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.format import read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError, TaskError
from hrm.tasks import Task


@dataclass
class Puzzles:
    """A few puzzles held in memory for the analyses (not the evaluator's `Examples` sources)."""

    inputs: np.ndarray  # [N, seq_len]
    labels: np.ndarray  # [N, seq_len], -100 where ignored
    puzzle_identifiers: np.ndarray  # [N]
    set_name: str

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, index: np.ndarray) -> "Puzzles":
        return Puzzles(self.inputs[index], self.labels[index], self.puzzle_identifiers[index], self.set_name)


def load_examples(
    data_path: str | Path,
    split: str = "test",
    count: int | None = None,
    *,
    set_name: str | None = None,
    seed: int | None = None,
) -> tuple[Puzzles, PuzzleDatasetMetadata]:
    """`count` examples of a split (all if None): the first ones, or a random sample when `seed` is given."""
    split_dir = Path(data_path) / split
    metadata, sets = read_split(data_path, split)
    set_name = set_name or metadata.sets[0]
    if set_name not in sets:
        raise DatasetError(f"set {set_name!r} is not in {split_dir} (its sets: {', '.join(metadata.sets)})")
    puzzle_set = sets[set_name]
    total = puzzle_set.num_examples
    if total == 0:
        raise DatasetError(f"{split_dir} holds no examples in set {set_name!r}")
    count = total if count is None else min(count, total)
    if seed is None:
        index = np.arange(count)
    else:
        index = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    # Example e belongs to puzzle p with puzzle_indices[p] <= e < puzzle_indices[p + 1].
    owner = np.searchsorted(np.asarray(puzzle_set.puzzle_indices), index, side="right") - 1
    chosen_labels = np.array(puzzle_set.labels[index], dtype=np.int64)
    if metadata.ignore_label_id is not None:
        chosen_labels[chosen_labels == metadata.ignore_label_id] = -100
    examples = Puzzles(
        np.array(puzzle_set.inputs[index], dtype=np.int64),
        chosen_labels,
        np.array(puzzle_set.puzzle_identifiers[owner], dtype=np.int64),
        set_name,
    )
    return examples, metadata


def puzzle_from_string(text: str, task: Task, solution: str | None = None) -> Puzzles:
    """One puzzle typed on the command line, read by its task. Its labels come from `solution` (same format as
    the puzzle) or, where the task can work them out (Sudoku), from the task's solver."""
    inputs = task.parse(text)
    labels = task.parse(solution) if solution else task.solve(inputs)
    if labels is not None and labels.shape != inputs.shape:
        raise TaskError(f"the solution has {labels.size} cells but the puzzle {inputs.size}")
    labels = (
        np.full(inputs.shape, -100, dtype=np.int64) if labels is None else np.where(labels == 0, -100, labels)
    )  # pad 0 is ignored
    return Puzzles(inputs[None], labels[None], np.zeros(1, dtype=np.int64), "string")
