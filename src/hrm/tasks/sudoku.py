"""Sudoku of any box shape: 9x9 with 3x3 boxes (Sudoku-Extreme), 6x6 with 2x3 boxes (the quick start), 4x4 ...

Tokens: pad 0, blank 1, digit d -> d + 1, so `vocab_size = side + 2` and `seq_len = side^2`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from hrm.errors import TaskError
from hrm.tasks.base import StepBoards, Task, grid_side, relabel_table

PAD, BLANK, FIRST_DIGIT = 0, 1, 2
# Box shape (rows, columns) of each board side; a side missing here is not a Sudoku layout.
BOX_SHAPES = {4: (2, 2), 6: (2, 3), 8: (2, 4), 9: (3, 3), 12: (3, 4), 16: (4, 4)}
DIGIT_SYMBOLS = "123456789ABCDEFG"


def sudoku_vocab_size(side: int) -> int:
    """Tokens of a side x side Sudoku: pad 0, blank 1, digits 2..side+1."""
    return FIRST_DIGIT + side


def _draw_sudoku(
    ax, task, givens: np.ndarray, board: np.ndarray, previous: np.ndarray | None, labels: np.ndarray
) -> None:
    from matplotlib.patches import Rectangle

    side = task.side
    conflicts = task.conflicts(board)
    is_digit = task.is_digit(board)
    for cell in range(side * side):
        r, c = divmod(cell, side)
        if previous is not None and previous[cell] != board[cell]:
            ax.add_patch(Rectangle((c, r), 1, 1, color="#ffe08a", zorder=0))
        if not is_digit[cell]:
            continue
        token = int(board[cell])
        wrong = labels[cell] != -100 and labels[cell] != token
        color = "#d62728" if conflicts[cell] else ("#7f7f7f" if wrong else "black")
        ax.text(
            c + 0.5,
            r + 0.55,
            task.digit_symbol(token),
            ha="center",
            va="center",
            fontsize=7,
            fontweight="bold" if task.is_digit(givens[cell]) else "normal",
            color=color,
        )
    ax.vlines(
        range(side + 1),
        0,
        side,
        colors="black",
        linewidths=[1.4 if x % task.box_cols == 0 else 0.3 for x in range(side + 1)],
    )
    ax.hlines(
        range(side + 1),
        0,
        side,
        colors="black",
        linewidths=[1.4 if y % task.box_rows == 0 else 0.3 for y in range(side + 1)],
    )
    ax.set_xlim(0, side)
    ax.set_ylim(side, 0)
    ax.set_aspect("equal")
    ax.axis("off")


class SudokuTask(Task):
    name: ClassVar[str] = "sudoku"
    layout: ClassVar[str] = "vocab_size side+2 and seq_len side^2 (side " + ", ".join(map(str, BOX_SHAPES)) + ")"
    has_rules: ClassVar[bool] = True
    verifiable: ClassVar[bool] = True
    supports_unknowns: ClassVar[bool] = True

    def __init__(self, vocab_size: int, seq_len: int):
        super().__init__(vocab_size, seq_len)
        self.side = grid_side(seq_len)
        self.box_rows, self.box_cols = BOX_SHAPES[self.side]
        self.last_digit = FIRST_DIGIT + self.side - 1
        cells = np.arange(seq_len)
        rows, cols = cells // self.side, cells % self.side
        self.cell_box = (rows // self.box_rows) * (self.side // self.box_cols) + cols // self.box_cols
        self.cell_row, self.cell_col = rows, cols

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> bool:
        side = grid_side(seq_len)
        return side in BOX_SHAPES and vocab_size == side + 2

    def __repr__(self) -> str:
        return f"SudokuTask({self.side}x{self.side}, boxes {self.box_rows}x{self.box_cols})"

    # ---------------------------------------------------------------- codec and rendering

    def is_digit(self, tokens) -> np.ndarray:
        tokens = np.asarray(tokens)
        return (tokens >= FIRST_DIGIT) & (tokens <= self.last_digit)

    def digit_symbol(self, token: int) -> str:
        return DIGIT_SYMBOLS[token - FIRST_DIGIT]

    def parse(self, text: str) -> np.ndarray:
        """A puzzle of side^2 characters (digits, `.` or `0` for blanks; whitespace and `|`/`-`/`+` ignored)."""
        cells = [ch for ch in text if ch not in " \t\r\n|-+"]
        symbols = DIGIT_SYMBOLS[: self.side]
        bad = next((index for index, ch in enumerate(cells) if ch.upper() not in symbols + "0."), None)
        if bad is not None:
            raise TaskError(
                f"a {self.side}x{self.side} Sudoku puzzle holds digits 1-{symbols[-1]} with . or 0 for blanks, "
                f"but cell {bad + 1} is {cells[bad]!r}"
            )
        if len(cells) != self.seq_len:
            example = "53..7....6..195....98....6.8...6...34..8.3..17...2...6.6....28....419..5....8..79"
            raise TaskError(
                f"a {self.side}x{self.side} Sudoku puzzle needs {self.seq_len} cells of 1-{symbols[-1]} with . or 0 "
                f"for blanks, got {len(cells)} characters" + (f"; e.g. puzzle={example}" if self.side == 9 else "")
            )
        return np.array(
            [BLANK if ch in ".0" else symbols.index(ch.upper()) + FIRST_DIGIT for ch in cells], dtype=np.int64
        )

    def text(self, tokens: np.ndarray) -> list[str]:
        """The board with box borders; blanks as `.`."""
        tokens = np.asarray(tokens).tolist()
        cells = [
            " " if t == PAD else "." if t == BLANK else DIGIT_SYMBOLS[t - FIRST_DIGIT] if self.is_digit(t) else "?"
            for t in tokens
        ]
        lines = []
        for row in range(self.side):
            if row and row % self.box_rows == 0:
                lines.append("-+-".join("-" * (2 * self.box_cols - 1) for _ in range(self.side // self.box_cols)))
            chunks = [
                " ".join(cells[row * self.side + c : row * self.side + c + self.box_cols])
                for c in range(0, self.side, self.box_cols)
            ]
            lines.append(" | ".join(chunks))
        return lines

    def plot_steps(self, boards: StepBoards, path: str | Path) -> Path:
        """Boards of a Sudoku task of any box shape at the chosen steps: givens bold, cells breaking a rule red, wrong-but-legal grey, changed cells shaded."""
        from matplotlib.figure import Figure

        from hrm.tasks.figures import panel_grid, save_figure

        rows, columns = panel_grid(len(boards.steps))
        fig = Figure(figsize=(2.0 * columns, 2.2 * rows + 0.4))
        fig.subplots_adjust(
            left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (2.2 * rows + 0.4), wspace=0.08, hspace=0.25
        )
        previous = None
        for panel, (step, title) in enumerate(zip(boards.steps, boards.titles)):
            ax = fig.add_subplot(rows, columns, panel + 1)
            _draw_sudoku(ax, self, boards.inputs, boards.step_preds[step], previous, boards.labels)
            ax.set_title(title, fontsize=7)
            previous = boards.step_preds[step]
        fig.suptitle(
            "Intermediate predictions (bold: given, red: breaks a rule, grey: wrong, shaded: changed)", fontsize=9
        )
        return save_figure(fig, path, tight=False)

    # ---------------------------------------------------------------- rules and verification

    def conflicts(self, tokens: np.ndarray) -> np.ndarray:
        """Boolean mask [..., seq_len]: digit cells whose digit repeats in their row, column or box.
        Blank and non-digit tokens never conflict. Works on any leading batch shape."""
        tokens = np.asarray(tokens)
        onehot = (tokens[..., None] == np.arange(FIRST_DIGIT, self.last_digit + 1)) & self.is_digit(tokens)[..., None]
        onehot = onehot.astype(np.int16)  # [..., cells, digits]
        repeated = np.zeros(onehot.shape, bool)
        for unit_of_cell in (self.cell_row, self.cell_col, self.cell_box):
            members = (unit_of_cell[:, None] == np.arange(self.side)).astype(np.int16)  # [cells, units]
            per_unit = np.einsum("...cd,cu->...ud", onehot, members)  # digit counts per unit
            repeated |= per_unit[..., unit_of_cell, :] > 1
        return (onehot.astype(bool) & repeated).any(-1)

    def verify(self, inputs: np.ndarray, prediction: np.ndarray) -> bool:
        """A full grid of digits that keeps every given of the puzzle and breaks no rule."""
        grid, puzzle = np.asarray(prediction).reshape(-1), np.asarray(inputs).reshape(-1)
        if not self.is_digit(grid).all():
            return False
        givens = self.is_digit(puzzle)
        if (grid[givens] != puzzle[givens]).any():
            return False
        return not self.conflicts(grid).any()

    def solve(self, tokens: np.ndarray, max_nodes: int = 200_000) -> np.ndarray | None:
        """The solution by depth-first search with the fewest-candidates rule (for a puzzle typed on the
        command line); None if unsolvable or too hard."""
        board = [int(t) - 1 for t in np.asarray(tokens).reshape(-1)]
        if self.conflicts(np.asarray(tokens)).any():
            return None
        rows, cols, boxes = [0] * self.side, [0] * self.side, [0] * self.side
        unit_of = [(int(self.cell_row[i]), int(self.cell_col[i]), int(self.cell_box[i])) for i in range(self.seq_len)]
        for i, d in enumerate(board):
            if d:
                r, c, b = unit_of[i]
                rows[r] |= 1 << d
                cols[c] |= 1 << d
                boxes[b] |= 1 << d
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
                r, c, b = unit_of[i]
                used = rows[r] | cols[c] | boxes[b]
                options = [v for v in range(1, self.side + 1) if not used >> v & 1]
                if best_options is None or len(options) < len(best_options):
                    best, best_options = i, options
                    if len(options) <= 1:
                        break
            if best < 0:
                return True
            r, c, b = unit_of[best]
            units = ((rows, r), (cols, c), (boxes, b))
            for v in best_options:
                board[best] = v
                for unit, index in units:
                    unit[index] |= 1 << v
                if search():
                    return True
                for unit, index in units:
                    unit[index] ^= 1 << v
            board[best] = 0
            return False

        return np.array(board, dtype=np.int64) + 1 if search() else None

    # ---------------------------------------------------------------- perturbations

    @property
    def symmetries(self) -> tuple[int, ...]:
        """All 8 for square boxes; with rectangular boxes only those that keep boxes upright (identity,
        rot180, the two flips): a quarter turn would turn 2x3 boxes into 3x2 ones."""
        return tuple(range(8)) if self.box_rows == self.box_cols else (0, 2, 4, 5)

    def digit_shift(self, k: int) -> tuple[int, ...]:
        """Cyclic digit relabelling: digit token t becomes ((t - 2 + k) mod side) + 2."""
        return relabel_table(
            self.vocab_size,
            {t: (t - FIRST_DIGIT + k) % self.side + FIRST_DIGIT for t in range(FIRST_DIGIT, self.last_digit + 1)},
        )

    def relabellings(self, count: int, rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
        return [(f"shift{k}", self.digit_shift(k)) for k in range(self.side)]

    def input_perturbations(self) -> torch.Tensor:
        return torch.tensor([self.digit_shift(k) for k in range(self.side)], dtype=torch.long)

    # ---------------------------------------------------------------- near-solved puzzles

    def complete(self, boards: np.ndarray) -> np.ndarray:
        """Which boards [N, seq_len] are fully filled with digits (solution labels)."""
        return self.is_digit(boards).all(-1)

    def unknown_cells(self, boards: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Copies of solved boards with `count` distinct random cells of each set to the blank token."""
        inputs = np.array(boards, copy=True)
        for row in inputs:
            row[rng.choice(inputs.shape[1], size=count, replace=False)] = BLANK
        return inputs
