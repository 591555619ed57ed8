"""What the analyses need to know about each benchmark: token layout, rule checks and invertible perturbations.

Token conventions are those of the dataset builders (spec section 1): Sudoku token = digit + 1 (blank 1),
maze `# SGo` = 1..5, ARC colour c = c + 2 with 1 marking the end of a grid; 0 is padding everywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from hrm.data.arc import crop_grid, place_on_canvas
from hrm.errors import HRMError

TASKS = ("sudoku", "maze", "arc", "generic")

SUDOKU_BLANK = 1
SUDOKU_DIGIT_TOKENS = range(2, 11)
MAZE_CHARS = "# SGo"
MAZE_WALL, MAZE_OPEN, MAZE_START, MAZE_GOAL, MAZE_PATH = 1, 2, 3, 4, 5
ARC_COLOUR_OFFSET = 2


class AnalysisError(HRMError):
    """A request the analysis tools cannot serve (wrong task, unsupported model, bad puzzle string)."""


def detect_task(vocab_size: int, seq_len: int) -> str:
    """Name the benchmark from the dataset's vocabulary and sequence length (spec section 1)."""
    if vocab_size == 11 and seq_len == 81:
        return "sudoku"
    if vocab_size == 6:
        return "maze"
    if vocab_size == 12 and seq_len == 900:
        return "arc"
    return "generic"


def grid_side(seq_len: int) -> int | None:
    """Side of the square board a sequence lays out as, or None if it is not a square."""
    side = math.isqrt(seq_len)
    return side if side * side == seq_len else None


# --------------------------------------------------------------------------------------------- Sudoku


def sudoku_conflicts(tokens: np.ndarray) -> np.ndarray:
    """Boolean mask [..., 81]: cells whose digit repeats in their row, column or 3x3 box.

    Blank and non-digit tokens never conflict. Works on any leading batch shape.
    """
    tokens = np.asarray(tokens)
    board = tokens.reshape(tokens.shape[:-1] + (9, 9))
    is_digit = (board >= 2) & (board <= 10)
    onehot = (board[..., None] == np.arange(2, 11)) & is_digit[..., None]  # [..., 9, 9, 9 digits]
    onehot = onehot.astype(np.int16)
    row_count = onehot.sum(-2, keepdims=True)
    col_count = onehot.sum(-3, keepdims=True)
    boxes = onehot.reshape(onehot.shape[:-3] + (3, 3, 3, 3, 9)).sum((-4, -2), keepdims=True)
    box_count = np.broadcast_to(boxes, onehot.shape[:-3] + (3, 3, 3, 3, 9)).reshape(onehot.shape)
    repeated = (row_count > 1) | (col_count > 1) | (box_count > 1)
    conflict = (onehot.astype(bool) & repeated).any(-1)
    return conflict.reshape(tokens.shape)


def sudoku_violation_count(tokens: np.ndarray) -> np.ndarray:
    """Number of cells breaking a Sudoku rule, per board ([..., 81] -> [...])."""
    return sudoku_conflicts(tokens).sum(-1)


def parse_sudoku(text: str) -> np.ndarray:
    """An 81-character puzzle (digits, `.` or `0` for blanks; whitespace and `|`/`-`/`+` ignored) as tokens."""
    cells = [ch for ch in text if ch not in " \t\r\n|-+"]
    bad = next((index for index, ch in enumerate(cells) if ch not in "0123456789."), None)
    if bad is not None:
        raise AnalysisError(f"a Sudoku puzzle holds digits 1-9 with . or 0 for blanks, but cell {bad + 1} is {cells[bad]!r}")
    if len(cells) != 81:
        raise AnalysisError(
            f"a Sudoku puzzle needs 81 cells of 1-9 with . or 0 for blanks, got {len(cells)} characters; "
            "e.g. puzzle=53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
        )
    return np.array([0 if ch == "." else int(ch) for ch in cells], dtype=np.int64) + 1


def solve_sudoku(tokens: np.ndarray, max_nodes: int = 200_000) -> np.ndarray | None:
    """The solution of a Sudoku (tokens in, tokens out) by depth-first search with the fewest-candidates rule.

    Used only to give a puzzle typed on the command line its labels; None if unsolvable or too hard.
    """
    board = [int(t) - 1 for t in np.asarray(tokens).reshape(-1)]
    if sudoku_conflicts(np.asarray(tokens)).any():
        return None
    rows, cols, boxes = [0] * 9, [0] * 9, [0] * 9
    for i, d in enumerate(board):
        if d:
            bit = 1 << d
            rows[i // 9] |= bit
            cols[i % 9] |= bit
            boxes[(i // 27) * 3 + (i % 9) // 3] |= bit
    nodes = 0

    def search() -> bool:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            return False
        best, best_options = -1, None
        for i, d in enumerate(board):
            if d:
                continue
            used = rows[i // 9] | cols[i % 9] | boxes[(i // 27) * 3 + (i % 9) // 3]
            options = [v for v in range(1, 10) if not used >> v & 1]
            if best_options is None or len(options) < len(best_options):
                best, best_options = i, options
                if len(options) <= 1:
                    break
        if best < 0:
            return True
        units = ((rows, best // 9), (cols, best % 9), (boxes, (best // 27) * 3 + (best % 9) // 3))
        for v in best_options:
            bit = 1 << v
            board[best] = v
            for unit, index in units:
                unit[index] |= bit
            if search():
                return True
            for unit, index in units:
                unit[index] ^= bit
        board[best] = 0
        return False

    return np.array(board, dtype=np.int64) + 1 if search() else None


# ----------------------------------------------------------------------------------------------- Maze


def parse_maze(text: str) -> np.ndarray:
    """A maze drawn with `# SGo` (rows separated by newlines or `|`, or one 900-character string) as tokens."""
    rows = [row for row in text.replace("|", "\n").split("\n") if row]
    flat = "".join(rows)
    bad = next((index for index, ch in enumerate(flat) if ch not in MAZE_CHARS), None)
    if bad is not None:
        raise AnalysisError(f"a maze is drawn with the characters '{MAZE_CHARS}' (wall, open, start, goal, path), "
                            f"but cell {bad + 1} is {flat[bad]!r}")
    side = grid_side(len(flat))
    if side is None:
        raise AnalysisError(
            f"a maze needs a square grid of the characters '{MAZE_CHARS}' (wall, open, start, goal, path), "
            f"got {len(flat)} characters; pass rows separated by | or a file via puzzle_file=PATH"
        )
    return np.array([MAZE_CHARS.index(ch) + 1 for ch in flat], dtype=np.int64)


# ------------------------------------------------------------------------------------------------ ARC


def parse_arc_grid(text: str) -> np.ndarray:
    """An ARC grid as JSON (`[[0,1],[2,3]]`) placed on the 30x30 canvas with its end-of-grid markers."""
    try:
        grid = np.array(json.loads(text), dtype=np.int64)
    except (json.JSONDecodeError, ValueError, TypeError):
        grid = None
    if grid is None or grid.ndim != 2 or grid.shape[0] > 30 or grid.shape[1] > 30 or grid.min() < 0 or grid.max() > 9:
        raise AnalysisError("an ARC puzzle is a JSON list of rows of colours 0-9, at most 30x30, e.g. puzzle=[[0,1],[1,0]]")
    origin = np.zeros(1, dtype=np.int64)
    return place_on_canvas(grid[None], origin, origin)[0].astype(np.int64)


def crop_arc_grid(tokens: np.ndarray) -> np.ndarray:
    """The colour grid (values 0..9) at the top left of a canvas: the scorer's crop, as int64."""
    return crop_grid(tokens).astype(np.int64)


# -------------------------------------------------------------------------------------- perturbations


def dihedral(grid: np.ndarray, transform_id: int) -> np.ndarray:
    """The 8 symmetries of a square grid in the id order of spec section 2 (on the last two axes)."""
    ops: list[Callable[[np.ndarray], np.ndarray]] = [
        lambda g: g,
        lambda g: np.rot90(g, 1, axes=(-2, -1)),
        lambda g: np.rot90(g, 2, axes=(-2, -1)),
        lambda g: np.rot90(g, 3, axes=(-2, -1)),
        lambda g: np.flip(g, -1),
        lambda g: np.flip(g, -2),
        lambda g: np.swapaxes(g, -1, -2),
        lambda g: np.flip(np.rot90(g, 1, axes=(-2, -1)), -1),
    ]
    return np.ascontiguousarray(ops[transform_id](grid))


DIHEDRAL_INVERSE = (0, 3, 2, 1, 4, 5, 6, 7)


@dataclass(frozen=True)
class Perturbation:
    """An invertible change of a puzzle: a dihedral transform plus a token relabelling.

    `apply` maps a puzzle's tokens to the perturbed puzzle; `undo` maps an answer of the perturbed
    puzzle back to the original's frame, so answers of different perturbations can be compared.
    """

    name: str
    transform_id: int
    token_map: tuple[int, ...]  # token_map[t] = new token; identity where untouched

    def _grid(self, tokens: np.ndarray, transform_id: int) -> np.ndarray:
        side = grid_side(tokens.shape[-1])
        board = tokens.reshape(tokens.shape[:-1] + (side, side))
        return dihedral(board, transform_id).reshape(tokens.shape)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        mapped = np.asarray(self.token_map)[np.asarray(tokens)]
        return self._grid(mapped, self.transform_id)

    def undo(self, tokens: np.ndarray) -> np.ndarray:
        inverse = np.argsort(np.asarray(self.token_map))
        clipped = np.clip(np.asarray(tokens), 0, len(inverse) - 1)
        return inverse[self._grid(clipped, DIHEDRAL_INVERSE[self.transform_id])]


def _relabel(vocab_size: int, mapping: dict[int, int]) -> tuple[int, ...]:
    table = list(range(vocab_size))
    for old, new in mapping.items():
        table[old] = new
    return tuple(table)


def perturbations(task: str, vocab_size: int, seq_len: int, count: int, seed: int = 0) -> list[Perturbation]:
    """Up to `count` validity-preserving perturbations, the identity first.

    Sudoku: cyclic digit shifts k (spec section 8) times the 8 board symmetries; maze: the 8 symmetries
    times swapping start and goal; ARC: the 8 symmetries times random colour permutations (0 fixed).
    A generic task on a square board gets the symmetries only; otherwise only the identity.
    """
    rng = np.random.default_rng(seed)
    square = grid_side(seq_len) is not None
    transforms = range(8) if square else range(1)
    relabels: list[tuple[str, tuple[int, ...]]]
    if task == "sudoku":
        relabels = [(f"shift{k}", _relabel(vocab_size, {t: (t - 2 + k) % 9 + 2 for t in SUDOKU_DIGIT_TOKENS})) for k in range(9)]
    elif task == "maze":
        relabels = [("plain", _relabel(vocab_size, {})), ("swapSG", _relabel(vocab_size, {MAZE_START: MAZE_GOAL, MAZE_GOAL: MAZE_START}))]
    elif task == "arc":
        relabels = [("colours0", _relabel(vocab_size, {}))]
        for index in range(1, max(1, count)):
            perm = rng.permutation(9) + 1  # colours 1..9 permuted, 0 fixed
            relabels.append((f"colours{index}", _relabel(vocab_size, {c + ARC_COLOUR_OFFSET: int(p) + ARC_COLOUR_OFFSET for c, p in zip(range(1, 10), perm)})))
    else:
        relabels = [("plain", _relabel(vocab_size, {}))]
    indexed = [(r, t) for r in range(len(relabels)) for t in transforms]
    # Order so that a small count still mixes symmetries and relabellings, the identity first.
    indexed.sort(key=lambda rt: (max(rt), rt))
    return [Perturbation(f"{relabels[r][0]}/d{t}", t, relabels[r][1]) for r, t in indexed[:count]]
