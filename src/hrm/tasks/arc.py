"""ARC: colour grids up to 30x30 on a 30x30 canvas, cut at end-of-grid markers.

Tokens: pad 0, end-of-grid 1, colour c -> c + 2. The canvas layout and its scoring crop live with the
builder (`hrm.data.arc`); this module is what the tools need to know about the task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from hrm.data.arc import COLOUR_OFFSET, EOS_TOKEN, GRID_SIZE, SEQ_LEN, VOCAB_SIZE, crop_grid, place_on_canvas
from hrm.errors import TaskError
from hrm.tasks.base import StepBoards, Task, relabel_table

SYMBOLS = " |0123456789"  # pad, end-of-grid, colours


class ArcGridTask(Task):
    name: ClassVar[str] = "arc"
    layout: ClassVar[str] = f"vocab_size {VOCAB_SIZE} and seq_len {SEQ_LEN}"
    COLOUR_OFFSET = COLOUR_OFFSET
    EOS = EOS_TOKEN

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> bool:
        return vocab_size == VOCAB_SIZE and seq_len == SEQ_LEN

    def parse(self, text: str) -> np.ndarray:
        """An ARC grid as JSON (`[[0,1],[2,3]]`) placed on the canvas with its end-of-grid markers."""
        try:
            grid = np.array(json.loads(text), dtype=np.int64)
        except (json.JSONDecodeError, ValueError, TypeError):
            grid = None
        if (
            grid is None
            or grid.ndim != 2
            or grid.shape[0] > GRID_SIZE
            or grid.shape[1] > GRID_SIZE
            or grid.min() < 0
            or grid.max() > 9
        ):
            raise TaskError(
                "an ARC puzzle is a JSON list of rows of colours 0-9, at most 30x30, e.g. puzzle=[[0,1],[1,0]]"
            )
        origin = np.zeros(1, dtype=np.int64)
        return place_on_canvas(grid[None], origin, origin)[0].astype(np.int64)

    def crop(self, tokens: np.ndarray) -> np.ndarray:
        """The colour grid (values 0..9) at the top left of a canvas: the scorer's crop, as int64."""
        return crop_grid(tokens).astype(np.int64)

    def text(self, tokens: np.ndarray) -> list[str]:
        """The used part of the canvas (rows/columns up to the last non-pad token)."""
        canvas = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
        used = np.argwhere(canvas != 0)
        if used.size == 0:
            return ["(empty)"]
        bottom, right = used.max(axis=0) + 1
        return [
            "".join(SYMBOLS[t] if t < len(SYMBOLS) else "?" for t in row[:right]) for row in canvas[:bottom].tolist()
        ]

    def plot_steps(self, boards: StepBoards, path: str | Path) -> Path:
        from hrm.tasks.figures import plot_arc_steps

        return plot_arc_steps(self, boards, path)

    def relabellings(self, count: int, rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
        """Random permutations of colours 1..9 (0, the background, stays), the identity first."""
        relabels = [("colours0", relabel_table(self.vocab_size, {}))]
        for index in range(1, max(1, count)):
            perm = rng.permutation(9) + 1
            relabels.append(
                (
                    f"colours{index}",
                    relabel_table(
                        self.vocab_size, {c + COLOUR_OFFSET: int(p) + COLOUR_OFFSET for c, p in zip(range(1, 10), perm)}
                    ),
                )
            )
        return relabels
