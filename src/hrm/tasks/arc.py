"""ARC: colour grids up to 30x30 on a 30x30 canvas, cut at end-of-grid markers.

Tokens: pad 0, end-of-grid 1, colour c -> c + 2. This module owns the canvas layout (placing grids with
their end-of-grid markers, and the scoring crop), which the builder (`hrm.data.arc`) writes with, and
what the tools need to know about the task.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np

from hrm.errors import TaskError
from hrm.tasks.base import StepBoards, Task, relabel_table

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD_TOKEN, EOS_TOKEN, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
SYMBOLS = " |0123456789"  # pad, end-of-grid, colours
ARC_PALETTE = [
    "#000000",
    "#0074D9",
    "#FF4136",
    "#2ECC40",
    "#FFDC00",
    "#AAAAAA",
    "#F012BE",
    "#FF851B",
    "#7FDBFF",
    "#870C25",
]


def crop_grid(tokens: np.ndarray) -> np.ndarray:
    """The colour grid (0..9) at the top left of a 30x30 token canvas, cut at the end-of-grid markers.

    The largest top-left rectangle of colour tokens in which no row is wider than the rows above it
    (a row stops at its first marker or pad): the original's scoring crop. For a well-formed grid this
    is exactly the grid; for a ragged prediction it keeps the largest rectangle.
    """
    canvas = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + 10)
    best_area, best_shape = 0, (0, 0)
    width = GRID_SIZE
    for row in range(GRID_SIZE):
        stops = np.flatnonzero(~is_colour[row, :width])
        width = int(stops[0]) if stops.size else width
        if width == 0:
            break
        if (row + 1) * width > best_area:
            best_area, best_shape = (row + 1) * width, (row + 1, width)
    rows, cols = best_shape
    return (canvas[:rows, :cols] - COLOUR_OFFSET).astype(np.uint8)


def place_on_canvas(grids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Tokens `[K, 900]`: grid k (colours, `[K, h, w]`) at top-left `(rows[k], cols[k])` with end-of-grid markers
    in the row below it and the column right of it, where those fall inside the canvas."""
    count, height, width = grids.shape
    canvas = np.zeros((count, SEQ_LEN), np.uint8)
    place_flat(canvas, np.arange(count), grids.reshape(count, -1), height, width, rows, cols)
    return canvas


def place_flat(
    canvas: np.ndarray,
    canvas_rows: np.ndarray,
    values: np.ndarray,
    height: int,
    width: int,
    rows: np.ndarray,
    cols: np.ndarray,
) -> None:
    """Write `values` (`[K, height*width]` colours) into `canvas[canvas_rows[k]]` (flat 900-token rows) at the offsets."""
    flat_canvas = canvas.reshape(-1)
    base = canvas_rows.astype(np.int64) * SEQ_LEN + rows * GRID_SIZE + cols
    cell_offsets = (np.arange(height)[:, None] * GRID_SIZE + np.arange(width)[None, :]).reshape(-1)
    flat_canvas[base[:, None] + cell_offsets[None, :]] = values + COLOUR_OFFSET
    below = np.flatnonzero(rows + height < GRID_SIZE)
    if below.size:
        flat_canvas[base[below, None] + (height * GRID_SIZE + np.arange(width))[None, :]] = EOS_TOKEN
    right = np.flatnonzero(cols + width < GRID_SIZE)
    if right.size:
        flat_canvas[base[right, None] + (np.arange(height) * GRID_SIZE + width)[None, :]] = EOS_TOKEN


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
        """The input grid, the predicted grid at each chosen step (cropped at its end-of-grid marker), and the target."""
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure

        from hrm.tasks.figures import panel_grid, save_figure

        panels = [("input", boards.inputs)] + [
            (title, boards.step_preds[step]) for step, title in zip(boards.steps, boards.titles)
        ]
        if (boards.labels != -100).any():
            panels.append(("target", np.where(boards.labels == -100, 0, boards.labels)))
        rows, columns = panel_grid(len(panels))
        fig = Figure(figsize=(2.0 * columns, 2.2 * rows))
        for panel, (title, tokens) in enumerate(panels):
            ax = fig.add_subplot(rows, columns, panel + 1)
            grid = self.crop(tokens)
            if grid.size:
                ax.imshow(
                    grid + self.COLOUR_OFFSET,
                    cmap=ListedColormap(["#ffffff", "#bbbbbb"] + ARC_PALETTE),
                    vmin=0,
                    vmax=11,
                    interpolation="nearest",
                )
            else:
                ax.text(0.5, 0.5, "no grid", ha="center", va="center", transform=ax.transAxes, fontsize=7)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle("ARC: predicted output grid per step", fontsize=9)
        return save_figure(fig, path)

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
