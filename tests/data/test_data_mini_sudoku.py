"""The 6x6 mini Sudoku generator of the quick start, against plain one-puzzle-at-a-time references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hrm.data import mini_sudoku as ms
from hrm.data.metadata import PuzzleDatasetMetadata

REPO = Path(__file__).resolve().parents[2]


def peers(cell: int) -> set[int]:
    return {other for unit in ms.UNITS if cell in unit for other in unit} - {cell}


def candidates(grid: list[int], cell: int) -> set[int]:
    return set(range(1, 7)) - {grid[p] for p in peers(cell)}


def reference_rounds(puzzle) -> tuple[list[int], int]:
    """Rounds of naked and hidden singles, one cell and one unit at a time."""
    grid, rounds = [int(v) for v in puzzle], 0
    while 0 in grid:
        fill = {}
        for cell in range(36):
            if grid[cell] == 0 and len(options := candidates(grid, cell)) == 1:
                fill[cell] = options.pop()
        for unit in ms.UNITS:
            for digit in range(1, 7):
                places = [c for c in unit if grid[c] == 0 and digit in candidates(grid, c)]
                if len(places) == 1:
                    fill[places[0]] = digit
        if not fill:
            break
        for cell, digit in fill.items():
            grid[cell] = digit
        rounds += 1
    return grid, rounds


def count_solutions(grid: list[int], limit: int = 2) -> int:
    if 0 not in grid:
        return 1
    cell = grid.index(0)
    total = 0
    for digit in candidates(grid, cell):
        grid[cell] = digit
        total += count_solutions(grid, limit - total)
        grid[cell] = 0
        if total >= limit:
            break
    return total


def is_valid_grid(grids: np.ndarray) -> np.ndarray:
    return (np.sort(grids[:, ms.UNITS], axis=2) == np.arange(1, 7)).all(axis=(1, 2))


def test_random_solutions_are_valid_and_varied():
    grids = ms.random_solutions(np.random.default_rng(0), 3000)
    assert grids.shape == (3000, 36) and grids.dtype == np.uint8
    assert is_valid_grid(grids).all()
    assert len({g.tobytes() for g in grids}) > 2990  # drawn from all 28,200,960 grids, not a small family


def test_singles_rounds_equal_the_reference():
    rng = np.random.default_rng(1)
    solutions = ms.random_solutions(rng, 60)
    blanks = rng.random((60, 36)) < rng.uniform(0.3, 0.75, size=(60, 1))
    puzzles = np.where(blanks, 0, solutions).astype(np.uint8)
    grids, rounds = ms.singles_rounds(puzzles)
    outcomes = set()
    for puzzle, grid, used in zip(puzzles, grids, rounds):
        expected_grid, expected_rounds = reference_rounds(puzzle)
        assert grid.tolist() == expected_grid
        if 0 not in expected_grid:
            assert used == expected_rounds
        outcomes.add(0 in expected_grid)
    assert outcomes == {True, False}  # both solvable and stuck puzzles were checked


def test_generated_puzzles_have_one_solution_and_their_rating():
    puzzles, solutions, ratings = ms.generate_puzzles(40, seed=3, min_rounds=3)
    assert is_valid_grid(solutions).all()
    given = puzzles > 0
    assert (puzzles[given] == solutions[given]).all()
    blanks = (~given).sum(axis=1)
    assert blanks.min() >= 14 and blanks.max() <= 24
    assert ratings.min() >= 3
    for puzzle, solution, rating in zip(puzzles, solutions, ratings):
        assert count_solutions([int(v) for v in puzzle]) == 1
        grid, rounds = reference_rounds(puzzle)
        assert grid == solution.tolist() and rounds == rating


def test_builder_writes_the_sudoku_layout_with_disjoint_splits(tmp_path):
    out = tmp_path / "mini"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "dataset/build_mini_sudoku_dataset.py"),
            "--output-dir",
            str(out),
            "--generate",
            "300",
            "--test-size",
            "50",
            "--min-difficulty",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    meta = PuzzleDatasetMetadata.load(out / "train")
    assert (meta.seq_len, meta.vocab_size, meta.total_groups) == (36, 8, 300)
    train_inputs = np.load(out / "train" / "all__inputs.npy")
    test_inputs = np.load(out / "test" / "all__inputs.npy")
    test_labels = np.load(out / "test" / "all__labels.npy")
    assert train_inputs.shape == (300, 36) and test_inputs.shape == (50, 36)
    assert set(np.unique(test_inputs)) <= set(range(1, 8)) and set(np.unique(test_labels)) <= set(range(2, 8))
    assert not {row.tobytes() for row in train_inputs} & {row.tobytes() for row in test_inputs}
    _, rounds = ms.singles_rounds(test_inputs.astype(np.int64) - 1)
    assert rounds.min() >= 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--min-blanks", "30", "--max-blanks", "20"], "--min-blanks <= --max-blanks"),
        (["--generate", "0"], "must be positive"),
        (["--min-difficulty", "30", "--generate", "5"], "lower --min-difficulty"),
    ],
)
def test_bad_settings_are_one_line_errors(tmp_path, flags, message):
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "dataset/build_mini_sudoku_dataset.py"),
            "--output-dir",
            str(tmp_path / "x"),
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert not (tmp_path / "x").exists()
