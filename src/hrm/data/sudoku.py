"""Sudoku-Extreme: reading, validating, generating, augmenting and writing.

Grids are `uint8 [N, 81]` digits with 0 for a blank. Augmentation and hints are vectorised over all
copies at once, so Sudoku-Extreme-1k with 1000 augmentations builds in a few seconds.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import logging
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from einops import rearrange

from hrm.data import sudoku_solver
from hrm.data.common import (
    BuildSummary,
    CsvPuzzles,
    OneLineParser,
    add_source_arguments,
    check_counts,
    csv_sources,
    hub_download,
    read_four_column_csv,
    split_single_file,
    write_split,
)
from hrm.data.format import BLANK_IDENTIFIER_NAME, check_output_dir, staged_directory, write_identifiers
from hrm.errors import DatasetError
from hrm.progress import progress_bar
from hrm.tasks.sudoku import sudoku_vocab_size

logger = logging.getLogger(__name__)

DEFAULT_REPO = "sapientinc/sudoku-extreme"
OFFLINE_HINT = "use --source-csv DIR_OR_FILE (train.csv/test.csv with source,question,answer,rating) or --generate N"
SEQ_LEN = 81
VOCAB_SIZE = sudoku_vocab_size(9)
_BLOCK = 1 << 16  # copies transformed per step; bounds the temporary index arrays
_MAX_TRIES_PER_PUZZLE = 2000


@dataclass
class SudokuPuzzles:
    """Puzzles (0 = blank) with their solutions and ratings."""

    puzzles: np.ndarray  # uint8 [N, 81]
    solutions: np.ndarray  # uint8 [N, 81]
    ratings: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return int(self.puzzles.shape[0])

    def select(self, keep) -> "SudokuPuzzles":
        return SudokuPuzzles(self.puzzles[keep], self.solutions[keep], self.ratings[keep])


def grid_rule_violations(grids: np.ndarray) -> np.ndarray:
    """For complete grids `[N, 81]`, a bool `[N, 27]`: which rows, columns and boxes are not 1..9 once each."""
    bits = np.left_shift(np.uint16(1), np.asarray(grids).reshape(-1, 9, 9).astype(np.uint16))
    boxes = rearrange(bits, "n (band r) (stack c) -> n (band stack) (r c)", r=3, c=3)  # each box's cells as a row
    seen = np.concatenate(
        [np.bitwise_or.reduce(bits, axis=2), np.bitwise_or.reduce(bits, axis=1), np.bitwise_or.reduce(boxes, axis=2)],
        axis=1,
    )
    return seen != 0x3FE  # nine cells holding all of 1..9 hold each exactly once


def _unit_name(index: int) -> str:
    kind, number = divmod(index, 9)
    return f"{('row', 'column', 'box')[kind]} {number + 1}"


def from_csv_rows(rows: CsvPuzzles) -> SudokuPuzzles:
    """Convert and validate CSV rows; the first bad row is a one-line error with file and line."""
    puzzles = rows.questions.copy()
    puzzles[puzzles == ord(".")] = ord("0")
    puzzles -= ord("0")
    solutions = rows.answers - np.uint8(ord("0"))
    for start in range(0, len(solutions), _BLOCK):  # in blocks: the check's temporaries are ~300 bytes per row
        violations = grid_rule_violations(solutions[start : start + _BLOCK])
        if violations.any():
            row, unit = np.argwhere(violations)[0]
            raise DatasetError(
                f"{rows.path}:{rows.lines[start + row]}: the answer breaks a Sudoku rule in {_unit_name(int(unit))}"
            )
    disagree = (puzzles != 0) & (puzzles != solutions)
    if disagree.any():
        row, cell = np.argwhere(disagree)[0]
        raise DatasetError(
            f"{rows.path}:{rows.lines[row]}: the answer disagrees with the given {puzzles[row, cell]} at row {cell // 9 + 1}, column {cell % 9 + 1}"
        )
    return SudokuPuzzles(puzzles, solutions, rows.ratings)


def _generate_one(task: tuple[int, int, int | None]) -> tuple[np.ndarray, np.ndarray, int]:
    """Puzzle number `index` of a seeded run: its own generator, so the result does not depend on the workers."""
    seed, index, min_difficulty = task
    rng = np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, index])))
    for _ in range(_MAX_TRIES_PER_PUZZLE):
        puzzle, solution, rating = sudoku_solver.generate_puzzle(rng)
        if min_difficulty is None or rating >= min_difficulty:
            return puzzle, solution, rating
    raise DatasetError(
        f"no generated Sudoku reached --min-difficulty {min_difficulty} in {_MAX_TRIES_PER_PUZZLE} tries; "
        "only about 1% of generated puzzles need more than about 35 guesses, use a lower value"
    )


def generate_sudokus(
    n: int, seed: int, min_difficulty: int | None = None, progress: bool = True, workers: int | None = None
) -> SudokuPuzzles:
    """`n` puzzles with a unique solution, each rated by the guesses of the singles-only solver.

    Puzzle `i` depends only on `(seed, i)`, so any number of worker processes gives the same puzzles.
    """
    tasks = [(seed, index, min_difficulty) for index in range(n)]
    workers = min(workers or os.cpu_count() or 1, max(1, n // 16))
    made = []
    with progress_bar(total=n, desc="generating Sudokus", unit="puzzle", disable=not progress) as bar:
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for item in pool.map(_generate_one, tasks, chunksize=8):
                    made.append(item)
                    bar.update(1)
        else:
            for task in tasks:
                made.append(_generate_one(task))
                bar.update(1)
    if n == 0:
        return SudokuPuzzles(np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8), np.zeros(0, np.int64))
    puzzles, solutions, ratings = zip(*made)
    return SudokuPuzzles(np.stack(puzzles), np.stack(solutions), np.asarray(ratings, np.int64))


@functools.lru_cache(maxsize=None)
def _all_permutations(size: int) -> np.ndarray:
    """Every permutation of 0..size-1 (`[size!, size]` uint8), so a uniform draw is one integer per copy."""
    flat = itertools.chain.from_iterable(itertools.permutations(range(size)))
    return np.fromiter(flat, dtype=np.uint8, count=math.factorial(size) * size).reshape(-1, size)


def _random_permutations(rng: np.random.Generator, shape: tuple[int, ...], size: int) -> np.ndarray:
    table = _all_permutations(size)
    return table[rng.integers(0, table.shape[0], size=shape)]


def random_transforms(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random validity-preserving transforms: (source cell per output cell `[count, 81]`, digit map `[count, 10]`)."""
    digit_map = np.zeros((count, 10), np.uint8)
    digit_map[:, 1:] = _random_permutations(rng, (count,), 9) + 1
    transpose = rng.random(count) < 0.5

    def line_permutation() -> np.ndarray:
        bands = _random_permutations(rng, (count,), 3)
        inner = _random_permutations(rng, (count, 3), 3)
        return (3 * bands[:, :, None] + inner).reshape(count, 9)

    rows, cols = line_permutation(), line_permutation()
    row_of = rows[:, :, None]  # output row r reads source line rows[r]
    col_of = cols[:, None, :]
    plain = row_of * np.uint8(9) + col_of
    transposed = col_of * np.uint8(9) + row_of
    source_cell = np.where(transpose[:, None, None], transposed, plain).reshape(count, 81)
    return source_cell, digit_map


def _gather_rows(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """`table[i, index[i, j]]` for every i, j, through one flat fancy index."""
    rows, width = table.shape
    return table.reshape(-1)[np.arange(rows, dtype=np.intp)[:, None] * width + index]


def apply_transforms(grids: np.ndarray, source_cell: np.ndarray, digit_map: np.ndarray) -> np.ndarray:
    """Apply per-row transforms to grids `[count, 81]` (0 stays 0)."""
    return _gather_rows(digit_map, _gather_rows(np.ascontiguousarray(grids), source_cell))


def _transform_pairs(
    puzzles: np.ndarray, solutions: np.ndarray, source_cell: np.ndarray, digit_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """`apply_transforms` for puzzles and their solutions at once (the puzzle is the solution where not blank)."""
    flat_index = np.arange(len(source_cell), dtype=np.intp)[:, None] * 81 + source_cell
    new_solutions = _gather_rows(digit_map, solutions.reshape(-1)[flat_index])
    given = (puzzles != 0).reshape(-1)[flat_index]
    return np.where(given, new_solutions, np.uint8(0)), new_solutions


def add_hints(rng: np.random.Generator, puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """Easier copies: k ~ U{1..blanks-1} random blanks filled from the solution (unchanged when < 2 blanks)."""
    blank = puzzles == 0
    num_blank = blank.sum(axis=1)
    fill = np.floor(rng.random(len(puzzles)) * np.maximum(num_blank - 1, 0)).astype(np.int64) + 1
    fill = np.where(num_blank >= 2, fill, 0)
    keys = np.where(blank, rng.random(puzzles.shape), 2.0)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    reveal = rank < fill[:, None]
    return np.where(reveal, solutions, puzzles)


def build_split_arrays(
    data: SudokuPuzzles, num_aug: int, hint: bool, rng: np.random.Generator, progress: bool = True
) -> dict[str, np.ndarray]:
    """The five arrays of one split: each original forms a group of itself and `num_aug` augmented copies,
    every copy its own one-example puzzle; with `hint`, each copy is followed by an easier copy in the group."""
    n = len(data)
    copies = 1 + num_aug
    per_copy = 2 if hint else 1
    total = n * copies * per_copy
    inputs = np.empty((total, SEQ_LEN), np.uint8)
    labels = np.empty((total, SEQ_LEN), np.uint8)
    # row layout: original i, copy j, (plain, hint) -> ((i * copies) + j) * per_copy + h
    with progress_bar(total=n * copies, desc="augmenting", unit="grid", disable=not progress) as bar:
        for start in range(0, n * copies, _BLOCK):
            stop = min(start + _BLOCK, n * copies)
            index = np.arange(start, stop)
            original, copy = index // copies, index % copies
            puzzles = data.puzzles[original]
            solutions = data.solutions[original]
            augmented = copy > 0
            if augmented.any():
                source_cell, digit_map = random_transforms(rng, int(augmented.sum()))
                puzzles[augmented], solutions[augmented] = _transform_pairs(
                    puzzles[augmented], solutions[augmented], source_cell, digit_map
                )
            rows = index * per_copy
            inputs[rows] = puzzles + 1
            labels[rows] = solutions + 1
            if hint:
                inputs[rows + 1] = add_hints(rng, puzzles, solutions) + 1
                labels[rows + 1] = solutions + 1
            bar.update(stop - start)
    puzzles_per_group = copies * per_copy
    return {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.zeros(total, np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.arange(0, total + 1, puzzles_per_group, dtype=np.int32),
    }


def load_sources(args: argparse.Namespace) -> dict[str, SudokuPuzzles | CsvPuzzles]:
    """The train and test puzzles from whichever source the flags name (CSV rows are checked once selected)."""
    if args.generate is not None:
        if args.generate < 1:
            raise DatasetError(f"--generate needs a positive number of puzzles, got {args.generate}")
        num_test = args.test_size if args.test_size is not None else max(1, args.generate // 10)
        return {
            "train": generate_sudokus(args.generate, args.seed, args.min_difficulty),
            "test": generate_sudokus(num_test, args.seed + 1_000_003, args.min_difficulty),
        }
    if args.source_csv is not None:
        found = csv_sources(args.source_csv)
        if "file" in found:
            return split_single_file(read_sudoku_rows(found["file"]), args.seed, args.test_fraction)
        return {split: read_sudoku_rows(path) for split, path in found.items()}
    return {
        split: read_sudoku_rows(hub_download(args.source_repo, f"{split}.csv", OFFLINE_HINT))
        for split in ("train", "test")
    }


def read_sudoku_rows(path) -> CsvPuzzles:
    """The rows of a Sudoku CSV, parsed but not yet checked against the rules (`from_csv_rows` does that)."""
    return read_four_column_csv(path, SEQ_LEN, b".0123456789", b"123456789", "Sudoku")


def build(args: argparse.Namespace) -> BuildSummary:
    if args.num_aug < 0:
        raise DatasetError(f"--num-aug must be >= 0, got {args.num_aug}")
    check_counts(args)
    check_output_dir(args.output_dir, [args.source_csv] if args.source_csv else [])
    summary = BuildSummary("Sudoku", Path(args.output_dir), difficulty_label="rating")
    sources = load_sources(args)
    rng = np.random.Generator(np.random.Philox(seed=args.seed))
    output_dir = Path(args.output_dir)
    with staged_directory(output_dir) as stage:
        for split in ("train", "test"):
            data = sources[split]
            if args.min_difficulty is not None and args.generate is None:
                data = data.select(data.ratings >= args.min_difficulty)
            if split == "train" and args.subsample_size is not None and args.subsample_size < len(data):
                data = data.select(np.sort(rng.choice(len(data), args.subsample_size, replace=False)))
            if len(data) == 0:
                raise DatasetError(f"no {split} puzzles left (check --min-difficulty / --subsample-size)")
            if isinstance(data, CsvPuzzles):
                data = from_csv_rows(data)  # rules and givens are checked on the rows that go into the dataset
            is_train = split == "train"
            arrays = build_split_arrays(data, args.num_aug if is_train else 0, args.hint and is_train, rng)
            write_split(stage, split, arrays, VOCAB_SIZE, summary, data.ratings)
        write_identifiers(stage, [BLANK_IDENTIFIER_NAME])
    return summary


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Build a Sudoku-Extreme dataset (from the hub, a CSV, or generated offline).")
    p.add_argument("--output-dir", default="data/sudoku-extreme-full")
    add_source_arguments(p, "puzzles", DEFAULT_REPO, default_test_size="N/10")
    p.add_argument("--min-difficulty", type=int, default=None, help="keep puzzles with rating >= this")
    p.add_argument("--num-aug", type=int, default=0)
    p.add_argument(
        "--hint",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add an easier copy after every training example (Augmented HRM)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    summary = build(args)
    print(summary.render())
