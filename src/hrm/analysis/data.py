"""Puzzles to analyse: examples read straight from a dataset split (spec section 1), or one typed as a string.

The arrays are memory-mapped and only the requested examples are read, so picking a few puzzles from a
large test split is instant; labels equal to `ignore_label_id` become -100 as in the loader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.analysis.tasks import AnalysisError, parse_arc_grid, parse_maze, parse_sudoku, solve_sudoku
from hrm.data.format import load_npy
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError


@dataclass
class Examples:
    inputs: np.ndarray  # [N, seq_len]
    labels: np.ndarray  # [N, seq_len], -100 where ignored
    puzzle_identifiers: np.ndarray  # [N]
    set_name: str

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def subset(self, index: np.ndarray) -> "Examples":
        return Examples(self.inputs[index], self.labels[index], self.puzzle_identifiers[index], self.set_name)


def _load_array(path: Path) -> np.ndarray:
    return load_npy(path, mmap=True)


def load_examples(data_path: str | Path, split: str = "test", count: int | None = None, *,
                  set_name: str | None = None, seed: int | None = None) -> tuple[Examples, PuzzleDatasetMetadata]:
    """`count` examples of a split (all if None): the first ones, or a random sample when `seed` is given."""
    split_dir = Path(data_path) / split
    metadata = PuzzleDatasetMetadata.load(split_dir)
    set_name = set_name or metadata.sets[0]
    if set_name not in metadata.sets:
        raise DatasetError(f"set {set_name!r} is not in {split_dir} (its sets: {', '.join(metadata.sets)})")
    inputs = _load_array(split_dir / f"{set_name}__inputs.npy")
    labels = _load_array(split_dir / f"{set_name}__labels.npy")
    puzzle_ids = _load_array(split_dir / f"{set_name}__puzzle_identifiers.npy")
    puzzle_indices = _load_array(split_dir / f"{set_name}__puzzle_indices.npy")
    total = inputs.shape[0]
    if total == 0:
        raise DatasetError(f"{split_dir} holds no examples in set {set_name!r}")
    count = total if count is None else min(count, total)
    if seed is None:
        index = np.arange(count)
    else:
        index = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    # Example e belongs to puzzle p with puzzle_indices[p] <= e < puzzle_indices[p + 1].
    owner = np.searchsorted(np.asarray(puzzle_indices), index, side="right") - 1
    chosen_labels = np.array(labels[index], dtype=np.int64)
    if metadata.ignore_label_id is not None:
        chosen_labels[chosen_labels == metadata.ignore_label_id] = -100
    examples = Examples(np.array(inputs[index], dtype=np.int64), chosen_labels,
                        np.array(puzzle_ids[owner], dtype=np.int64), set_name)
    return examples, metadata


def puzzle_from_string(text: str, task: str, solution: str | None = None) -> Examples:
    """One puzzle typed on the command line. A Sudoku's labels come from `solution` or a built-in solver;
    other tasks get labels only from `solution` (same format as the puzzle)."""
    if task == "sudoku":
        inputs = parse_sudoku(text)
        labels = parse_sudoku(solution) if solution else solve_sudoku(inputs)
    elif task == "maze":
        inputs = parse_maze(text)
        labels = parse_maze(solution) if solution else None
    elif task == "arc":
        inputs = parse_arc_grid(text)
        labels = parse_arc_grid(solution) if solution else None
    else:
        raise AnalysisError(f"puzzles as strings exist for sudoku, maze and arc, not for task={task}; pass task=sudoku|maze|arc")
    if labels is not None and labels.shape != inputs.shape:
        raise AnalysisError(f"the solution has {labels.size} cells but the puzzle {inputs.size}")
    labels = np.full(inputs.shape, -100, dtype=np.int64) if labels is None else np.where(labels == 0, -100, labels)  # pad 0 is ignored
    return Examples(inputs[None], labels[None], np.zeros(1, dtype=np.int64), "string")
