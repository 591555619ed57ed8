"""Mini Sudoku: 6x6 grids with 2x3 boxes, generated offline, for the CPU quick start.

Every puzzle is solvable by rounds of "singles" (a cell with one candidate left, or a digit with one place
left in a row, column or box). Such a puzzle has exactly one solution, and its rating is the number of rounds
a solver needs: a puzzle rated 4 cannot be finished without chaining four rounds of deductions, so a model
that solves it reasons in several steps rather than copying its input. The search is vectorised over whole
batches of candidate puzzles, so the quick start's set builds quickly (timings in docs/datasets.md).

On disk it is the Sudoku layout with a smaller grid: `seq_len` 36, tokens pad 0, blank 1, digits 2..7.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hrm.data.common import BuildSummary, OneLineParser, check_seed, write_split
from hrm.data.format import BLANK_IDENTIFIER_NAME, check_output_dir, staged_directory, write_identifiers
from hrm.errors import DatasetError
from hrm.tasks.sudoku import sudoku_vocab_size

SIDE = 6
BOX_ROWS, BOX_COLS = 2, 3
SEQ_LEN = SIDE * SIDE
VOCAB_SIZE = sudoku_vocab_size(SIDE)

_ROW = np.repeat(np.arange(SIDE), SIDE)
_COL = np.tile(np.arange(SIDE), SIDE)
_BOX = (_ROW // BOX_ROWS) * (SIDE // BOX_COLS) + _COL // BOX_COLS
# [3 * SIDE units, SIDE cells]: the cell indices of every row, column and box.
UNITS = np.concatenate([np.stack([np.flatnonzero(kind == u) for u in range(SIDE)]) for kind in (_ROW, _COL, _BOX)])


_FULL = (1 << SIDE) - 1
_POPCOUNT = np.array([bin(m).count("1") for m in range(1 << SIDE)], np.uint8)
_LOWEST_DIGIT = np.array([(m & -m).bit_length() for m in range(1 << SIDE)], np.uint8)  # 1-based; 0 for no bit
_DIGIT_BITS = (1 << np.arange(SIDE)).astype(np.uint8)


def candidate_masks(grids: np.ndarray) -> np.ndarray:
    """Bit d-1 of a blank cell's mask is set when digit d is not yet in its row, column or box (filled cells: 0)."""
    digits = grids.astype(np.int64)
    bits = np.where(digits > 0, 1 << np.maximum(digits - 1, 0), 0)
    used = np.bitwise_or.reduce(bits[:, UNITS], axis=2)  # [N, units]
    taken = used[:, _ROW] | used[:, SIDE + _COL] | used[:, 2 * SIDE + _BOX]
    return np.where(grids == 0, ~taken & _FULL, 0).astype(np.uint8)


def random_solutions(rng: np.random.Generator, count: int) -> np.ndarray:
    """`count` random valid grids (digits 1..6, uint8 [count, 36]) from the whole space of 6x6 grids.

    All grids are filled at once, one cell per step: the blank cell with the fewest candidates (ties broken at
    random) gets a random one of them; the rare grid that reaches a dead end is dropped and replaced.
    """
    found = []
    while sum(len(f) for f in found) < count:
        batch = max(int(1.2 * (count - sum(len(f) for f in found))), 256)
        grids = np.zeros((batch, SEQ_LEN), np.uint8)
        alive = np.ones(batch, bool)
        rows = np.arange(batch)
        for _ in range(SEQ_LEN):
            masks = candidate_masks(grids)
            options = np.where(grids == 0, _POPCOUNT[masks].astype(np.float64), np.inf)
            alive &= ~((grids == 0) & (masks == 0)).any(axis=1)
            cell = np.argmin(options + rng.random(options.shape) * 0.5, axis=1)
            mask = masks[rows, cell]
            choice = np.floor(rng.random(batch) * np.maximum(_POPCOUNT[mask], 1)).astype(np.int64)
            # the choice-th set bit of the cell's mask
            ranks = np.cumsum((mask[:, None] & _DIGIT_BITS) > 0, axis=1) - 1
            digit = np.argmax(((mask[:, None] & _DIGIT_BITS) > 0) & (ranks == choice[:, None]), axis=1) + 1
            grids[rows, cell] = np.where(alive & (mask > 0), digit, grids[rows, cell])
        alive &= (grids > 0).all(axis=1)
        found.append(grids[alive])
    return np.concatenate(found)[:count]


def singles_rounds(puzzles: np.ndarray, max_rounds: int = SEQ_LEN) -> tuple[np.ndarray, np.ndarray]:
    """Solve by rounds of naked and hidden singles, all puzzles at once.

    Returns (grids after the last round, rounds used); a grid that still has blanks is not solvable by singles
    (its rounds value is then meaningless). Each round only touches the grids that are still being solved.
    """
    grids = puzzles.astype(np.uint8).copy()
    rounds = np.zeros(len(grids), np.int64)
    cells_by_kind = [UNITS[k * SIDE : (k + 1) * SIDE].ravel() for k in range(3)]  # each kind covers every cell once
    working = np.flatnonzero((grids == 0).any(axis=1))
    for _ in range(max_rounds):
        if len(working) == 0:
            break
        current = grids[working]
        masks = candidate_masks(current)
        fill = np.where(_POPCOUNT[masks] == 1, _LOWEST_DIGIT[masks], 0)  # naked singles
        has = (masks[:, UNITS][..., None] & _DIGIT_BITS) > 0  # [n, units, cells, digit]
        only_place = has & (has.sum(axis=2, keepdims=True) == 1)  # hidden singles
        hidden = np.where(only_place.any(axis=3), only_place.argmax(axis=3) + 1, 0).astype(
            np.uint8
        )  # [n, units, cells]
        for kind, cells in enumerate(cells_by_kind):
            from_kind = hidden[:, kind * SIDE : (kind + 1) * SIDE].reshape(len(working), SEQ_LEN)
            fill[:, cells] = np.where(from_kind > 0, from_kind, fill[:, cells])
        progressed = (fill > 0).any(axis=1)
        current = np.where(fill > 0, fill, current).astype(np.uint8)
        grids[working] = current
        rounds[working] += progressed
        working = working[progressed & (current == 0).any(axis=1)]
    return grids, rounds


def generate_puzzles(
    count: int, seed: int, min_rounds: int = 3, blanks: tuple[int, int] = (14, 24), exclude: set[bytes] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` distinct puzzles (uint8 [count, 36], 0 = blank), their solutions and ratings (rounds >= min_rounds)."""
    rng = np.random.Generator(np.random.Philox(seed=seed))
    seen = set(exclude or ())
    puzzles, solutions, ratings = [], [], []
    kept, fruitless = 0, 0
    while kept < count:
        if fruitless == 20:
            raise DatasetError(
                f"found too few distinct mini Sudokus needing {min_rounds}+ rounds with {blanks[0]}-{blanks[1]} "
                "blanks; lower --min-difficulty or widen the blank range"
            )
        batch = min(max(8 * (count - kept), 4096), 1 << 16)  # about one in eight is kept; bounded memory
        # Each solution grid gets four random blank patterns: the grids, not the patterns, are the slow part.
        solution = np.repeat(random_solutions(rng, batch // 4), 4, axis=0)
        batch = len(solution)
        num_blank = rng.integers(blanks[0], blanks[1] + 1, size=batch)
        order = np.argsort(rng.random((batch, SEQ_LEN)), axis=1)
        puzzle = np.where(np.argsort(order, axis=1) < num_blank[:, None], 0, solution).astype(np.uint8)
        solved, rounds = singles_rounds(puzzle)
        good = (solved == solution).all(axis=1) & (rounds >= min_rounds)
        before = kept
        for index in np.flatnonzero(good):
            key = puzzle[index].tobytes()
            if key in seen:
                continue
            seen.add(key)
            puzzles.append(puzzle[index])
            solutions.append(solution[index])
            ratings.append(rounds[index])
            kept += 1
            if kept == count:
                break
        fruitless = fruitless + 1 if kept == before else 0
    return np.stack(puzzles), np.stack(solutions), np.asarray(ratings, np.int64)


def split_arrays(puzzles: np.ndarray, solutions: np.ndarray) -> dict[str, np.ndarray]:
    """One example per puzzle and per group, tokens shifted by one as in the Sudoku layout (blank 1, digit d -> d + 1)."""
    n = len(puzzles)
    return {
        "inputs": puzzles + 1,
        "labels": solutions + 1,
        "puzzle_identifiers": np.zeros(n, np.int32),
        "puzzle_indices": np.arange(n + 1, dtype=np.int32),
        "group_indices": np.arange(n + 1, dtype=np.int32),
    }


def build(args: argparse.Namespace) -> BuildSummary:
    if args.generate < 1 or args.test_size < 1:
        raise DatasetError(f"--generate and --test-size must be positive, got {args.generate} and {args.test_size}")
    if not 1 <= args.min_blanks <= args.max_blanks < SEQ_LEN:
        raise DatasetError(
            f"need 1 <= --min-blanks <= --max-blanks < {SEQ_LEN}, got {args.min_blanks} and {args.max_blanks}"
        )
    check_seed(args.seed)
    check_output_dir(args.output_dir)
    blanks = (args.min_blanks, args.max_blanks)
    summary = BuildSummary("Mini Sudoku 6x6", Path(args.output_dir), difficulty_label="rounds of singles")
    train = generate_puzzles(args.generate, args.seed, args.min_difficulty, blanks)
    # Test puzzles are new puzzles: none of them appears in the train split.
    test = generate_puzzles(
        args.test_size, args.seed + 1_000_003, args.min_difficulty, blanks, exclude={p.tobytes() for p in train[0]}
    )
    with staged_directory(Path(args.output_dir)) as stage:
        for split, (puzzles, solutions, ratings) in (("train", train), ("test", test)):
            write_split(stage, split, split_arrays(puzzles, solutions), VOCAB_SIZE, summary, ratings)
        write_identifiers(stage, [BLANK_IDENTIFIER_NAME])
    return summary


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Build a 6x6 Sudoku dataset (2x3 boxes) offline, rated by rounds of singles.")
    p.add_argument("--output-dir", default="data/mini-sudoku")
    p.add_argument("--generate", type=int, default=50000, metavar="N", help="train puzzles to generate")
    p.add_argument("--test-size", type=int, default=1000, help="test puzzles to generate (never in train)")
    p.add_argument(
        "--min-difficulty", type=int, default=3, help="keep puzzles needing at least this many rounds of singles"
    )
    p.add_argument("--min-blanks", type=int, default=14)
    p.add_argument("--max-blanks", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> None:
    summary = build(parser().parse_args(argv))
    print(summary.render())
