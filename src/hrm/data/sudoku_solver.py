"""A small Sudoku solver for generating and rating puzzles offline.

Candidates are 9-bit masks. Between guesses the solver applies only naked singles (a cell with one
candidate) and hidden singles (a digit with one place in a row, column or box), so the number of guesses
it needs is a difficulty rating: 0 means singles alone solve the puzzle. The rating counts the guesses of
a complete search (which also proves uniqueness), so it does not depend on how the digits are labelled.
"""

from __future__ import annotations

import numpy as np

ALL_DIGITS = 0x1FF
POPCOUNT = tuple(bin(mask).count("1") for mask in range(512))
BIT_DIGIT = {1 << d: d + 1 for d in range(9)}
MASK_BITS = tuple(tuple(1 << d for d in range(9) if mask >> d & 1) for mask in range(512))

ROWS = [[r * 9 + c for c in range(9)] for r in range(9)]
COLS = [[r * 9 + c for r in range(9)] for c in range(9)]
BOXES = [[(br + r) * 9 + bc + c for r in range(3) for c in range(3)] for br in (0, 3, 6) for bc in (0, 3, 6)]
UNITS = ROWS + COLS + BOXES
PEERS = tuple(tuple(sorted({p for unit in UNITS if c in unit for p in unit} - {c})) for c in range(81))


class _SearchStats:
    __slots__ = ("guesses", "limit", "solutions", "rng")

    def __init__(self, limit: int, rng: np.random.Generator | None):
        self.guesses = 0
        self.limit = limit
        self.solutions: list[list[int]] = []
        self.rng = rng


def _propagate(cand: list[int], queue: list[int]) -> bool:
    """Apply naked and hidden singles in place until nothing changes; False on a contradiction."""
    while True:
        while queue:
            cell = queue.pop()
            mask = cand[cell]
            for peer in PEERS[cell]:
                peer_mask = cand[peer]
                if peer_mask & mask:
                    peer_mask &= ~mask
                    if not peer_mask:
                        return False
                    cand[peer] = peer_mask
                    if POPCOUNT[peer_mask] == 1:
                        queue.append(peer)
        for unit in UNITS:
            once = twice = 0
            for cell in unit:
                mask = cand[cell]
                twice |= once & mask
                once |= mask
            if once != ALL_DIGITS:
                return False
            hidden = once & ~twice
            if hidden:
                for cell in unit:
                    mask = cand[cell] & hidden
                    if mask and cand[cell] != mask:
                        if POPCOUNT[mask] > 1:
                            return False
                        cand[cell] = mask
                        queue.append(cell)
        if not queue:
            return True


def _search(cand: list[int], queue: list[int], stats: _SearchStats) -> None:
    if not _propagate(cand, queue):
        return
    best, best_count = -1, 10
    for cell in range(81):
        count = POPCOUNT[cand[cell]]
        if 1 < count < best_count:
            best, best_count = cell, count
            if count == 2:
                break
    if best < 0:
        stats.solutions.append(cand)
        return
    bits = MASK_BITS[cand[best]]
    if stats.rng is not None:
        bits = [bits[i] for i in stats.rng.permutation(len(bits))]
    for bit in bits:
        stats.guesses += 1
        child = cand[:]
        child[best] = bit
        _search(child, [best], stats)
        if len(stats.solutions) >= stats.limit:
            return


def _candidates(grid) -> tuple[list[int], list[int]]:
    cand = [ALL_DIGITS if int(v) == 0 else 1 << (int(v) - 1) for v in grid]
    return cand, [c for c in range(81) if cand[c] != ALL_DIGITS]


def _to_grid(cand: list[int]) -> np.ndarray:
    return np.array([BIT_DIGIT[m] for m in cand], dtype=np.uint8)


def solve(grid, limit: int = 2, rng: np.random.Generator | None = None) -> tuple[list[np.ndarray], int]:
    """Up to `limit` solutions of an 81-cell grid (0 = blank) and the number of guesses made."""
    cand, queue = _candidates(grid)
    stats = _SearchStats(limit, rng)
    _search(cand, queue, stats)
    return [_to_grid(s) for s in stats.solutions], stats.guesses


def rate(grid) -> tuple[int, int]:
    """(number of solutions up to 2, guesses of the complete search): the generator's difficulty."""
    solutions, guesses = solve(grid, limit=2)
    return len(solutions), guesses


def random_solution(rng: np.random.Generator) -> np.ndarray:
    solutions, _ = solve(np.zeros(81, np.uint8), limit=1, rng=rng)
    return solutions[0]


def _has_other_solution(puzzle: np.ndarray, cell: int, value: int) -> bool:
    """Whether the puzzle with `cell` blanked has a solution where that cell is not `value`."""
    cand, _ = _candidates(puzzle)
    cand[cell] = ALL_DIGITS & ~(1 << (value - 1))
    stats = _SearchStats(1, None)
    _search(cand, [c for c in range(81) if POPCOUNT[cand[c]] == 1], stats)
    return bool(stats.solutions)


def generate_puzzle(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """A minimal puzzle with a unique solution: (puzzle with 0 blanks, solution, rating)."""
    solution = random_solution(rng)
    puzzle = solution.copy()
    for cell in rng.permutation(81):
        value = int(puzzle[cell])
        puzzle[cell] = 0
        if _has_other_solution(puzzle, int(cell), value):
            puzzle[cell] = value
    _, guesses = rate(puzzle)
    return puzzle, solution, guesses
