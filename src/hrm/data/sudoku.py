"""Sudoku-Extreme: reading, validating, generating, augmenting and writing (spec sections 1 and 2).

Grids are `uint8 [N, 81]` digits with 0 for a blank. Augmentation and hints are vectorised over all
copies at once, so Sudoku-Extreme-1k with 1000 augmentations builds in a few seconds.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from hrm.data import sudoku_solver
from hrm.data.common import BuildSummary, CsvPuzzles, csv_sources, hub_download, read_four_column_csv, split_single_file
from hrm.data.format import SplitWriter, staged_directory, write_identifiers, BLANK_IDENTIFIER_NAME
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_REPO = "sapientinc/sudoku-extreme"
OFFLINE_HINT = "use --source-csv DIR_OR_FILE (train.csv/test.csv with source,question,answer,rating) or --generate N"
SEQ_LEN = 81
VOCAB_SIZE = 11  # pad 0, blank 1, digits 2..10
_BLOCK = 1 << 16  # copies transformed per step; bounds the temporary index arrays


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
    boards = np.asarray(grids).reshape(-1, 9, 9).astype(np.int64)
    boxes = boards.reshape(-1, 3, 3, 3, 3).transpose(0, 1, 3, 2, 4).reshape(-1, 9, 9)
    units = np.concatenate([boards, boards.transpose(0, 2, 1), boxes], axis=1)  # [N, 27, 9]
    seen = np.zeros(units.shape[:2] + (10,), bool)
    np.put_along_axis(seen, units, True, axis=2)
    return ~seen[:, :, 1:].all(axis=2)


def is_valid_solution(puzzles: np.ndarray, solutions: np.ndarray) -> np.ndarray:
    """Per row: the solution obeys every rule and agrees with the puzzle's givens."""
    puzzles, solutions = np.asarray(puzzles).reshape(-1, 81), np.asarray(solutions).reshape(-1, 81)
    consistent = np.all((puzzles == 0) | (puzzles == solutions), axis=1)
    return consistent & ~grid_rule_violations(solutions).any(axis=1)


def _unit_name(index: int) -> str:
    kind, number = divmod(index, 9)
    return f"{('row', 'column', 'box')[kind]} {number + 1}"


def from_csv_rows(rows: CsvPuzzles) -> SudokuPuzzles:
    """Convert and validate CSV rows; the first bad row is a one-line error with file and line."""
    puzzles = rows.questions.copy()
    puzzles[puzzles == ord(".")] = ord("0")
    puzzles -= ord("0")
    solutions = rows.answers - np.uint8(ord("0"))
    violations = grid_rule_violations(solutions)
    if violations.any():
        row, unit = np.argwhere(violations)[0]
        raise DatasetError(f"{rows.path}:{rows.lines[row]}: the answer breaks a Sudoku rule in {_unit_name(int(unit))}")
    disagree = (puzzles != 0) & (puzzles != solutions)
    if disagree.any():
        row, cell = np.argwhere(disagree)[0]
        raise DatasetError(
            f"{rows.path}:{rows.lines[row]}: the answer disagrees with the given {puzzles[row, cell]} at row {cell // 9 + 1}, column {cell % 9 + 1}"
        )
    return SudokuPuzzles(puzzles, solutions, rows.ratings)


def read_sudoku_csv(path: str | Path) -> SudokuPuzzles:
    return from_csv_rows(read_four_column_csv(path, SEQ_LEN, b".0123456789", b"123456789", "Sudoku"))


def generate_sudokus(n: int, seed: int, min_difficulty: int | None = None, progress: bool = True) -> SudokuPuzzles:
    """`n` puzzles with a unique solution, each rated by the guesses of the singles-only solver."""
    rng = np.random.Generator(np.random.Philox(seed=seed))
    puzzles, solutions, ratings = [], [], []
    with tqdm(total=n, desc="generating Sudokus", unit="puzzle", disable=not progress) as bar:
        while len(puzzles) < n:
            puzzle, solution, rating = sudoku_solver.generate_puzzle(rng)
            if min_difficulty is not None and rating < min_difficulty:
                continue
            puzzles.append(puzzle)
            solutions.append(solution)
            ratings.append(rating)
            bar.update(1)
    if n == 0:
        return SudokuPuzzles(np.zeros((0, 81), np.uint8), np.zeros((0, 81), np.uint8), np.zeros(0, np.int64))
    return SudokuPuzzles(np.stack(puzzles), np.stack(solutions), np.asarray(ratings, np.int64))


def random_transforms(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random validity-preserving transforms: (source cell per output cell `[count, 81]`, digit map `[count, 10]`)."""
    digit_map = np.zeros((count, 10), np.uint8)
    digit_map[:, 1:] = np.argsort(rng.random((count, 9)), axis=1) + 1
    transpose = rng.random(count) < 0.5

    def line_permutation() -> np.ndarray:
        bands = np.argsort(rng.random((count, 3)), axis=1)
        inner = np.argsort(rng.random((count, 3, 3)), axis=2)
        return (3 * bands[:, :, None] + inner).reshape(count, 9)

    rows, cols = line_permutation(), line_permutation()
    row_of = rows[:, :, None]  # output row r reads source line rows[r]
    col_of = cols[:, None, :]
    plain = row_of * 9 + col_of
    transposed = col_of * 9 + row_of
    source_cell = np.where(transpose[:, None, None], transposed, plain).reshape(count, 81).astype(np.uint8)
    return source_cell, digit_map


def apply_transforms(grids: np.ndarray, source_cell: np.ndarray, digit_map: np.ndarray) -> np.ndarray:
    """Apply per-row transforms to grids `[count, 81]` (0 stays 0)."""
    moved = np.take_along_axis(grids, source_cell.astype(np.intp), axis=1)
    return np.take_along_axis(digit_map, moved.astype(np.intp), axis=1)


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
    with tqdm(total=n * copies, desc="augmenting", unit="grid", disable=not progress) as bar:
        for start in range(0, n * copies, _BLOCK):
            stop = min(start + _BLOCK, n * copies)
            index = np.arange(start, stop)
            original, copy = index // copies, index % copies
            puzzles = data.puzzles[original]
            solutions = data.solutions[original]
            augmented = copy > 0
            if augmented.any():
                source_cell, digit_map = random_transforms(rng, int(augmented.sum()))
                puzzles[augmented] = apply_transforms(puzzles[augmented], source_cell, digit_map)
                solutions[augmented] = apply_transforms(solutions[augmented], source_cell, digit_map)
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


def sudoku_metadata(num_groups: int) -> PuzzleDatasetMetadata:
    return PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=VOCAB_SIZE,
        seq_len=SEQ_LEN,
        num_puzzle_identifiers=1,
        total_groups=num_groups,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )


def load_sources(args: argparse.Namespace) -> dict[str, SudokuPuzzles]:
    """The train and test puzzles from whichever source the flags name."""
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
            rows = read_four_column_csv(found["file"], SEQ_LEN, b".0123456789", b"123456789", "Sudoku")
            return {split: from_csv_rows(part) for split, part in split_single_file(rows, args.seed, args.test_fraction).items()}
        return {split: read_sudoku_csv(path) for split, path in found.items()}
    return {split: read_sudoku_csv(hub_download(args.source_repo, f"{split}.csv", OFFLINE_HINT)) for split in ("train", "test")}


def build(args: argparse.Namespace) -> BuildSummary:
    if args.num_aug < 0:
        raise DatasetError(f"--num-aug must be >= 0, got {args.num_aug}")
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
            is_train = split == "train"
            arrays = build_split_arrays(data, args.num_aug if is_train else 0, args.hint and is_train, rng)
            writer = SplitWriter(stage / split)
            writer.write_set("all", arrays)
            num_groups = len(arrays["group_indices"]) - 1
            writer.finish(sudoku_metadata(num_groups))
            summary.add_split(split, len(arrays["inputs"]), len(arrays["puzzle_identifiers"]), num_groups)
            summary.difficulty[split] = data.ratings
        write_identifiers(stage, [BLANK_IDENTIFIER_NAME])
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Build a Sudoku-Extreme dataset (from the hub, a CSV, or generated offline).")
    p.add_argument("--output-dir", default="data/sudoku-extreme-full")
    p.add_argument("--source-repo", default=DEFAULT_REPO, help="Hugging Face dataset repo (needs network and huggingface_hub)")
    p.add_argument("--source-csv", default=None, help="folder with train.csv/test.csv, or one CSV (split by --test-fraction)")
    p.add_argument("--generate", type=int, default=None, metavar="N", help="generate N train puzzles offline")
    p.add_argument("--test-size", type=int, default=None, help="test puzzles to generate with --generate (default N/10)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of a single --source-csv file used as test")
    p.add_argument("--subsample-size", type=int, default=None)
    p.add_argument("--min-difficulty", type=int, default=None, help="keep puzzles with rating >= this")
    p.add_argument("--num-aug", type=int, default=0)
    p.add_argument("--hint", action="store_true", help="add an easier copy after every training example (Augmented HRM)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    summary = build(args)
    print(summary.render())
