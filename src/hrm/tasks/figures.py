"""Images of boards: the per-step figures the tasks draw, and writing a figure as PNG.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display needed)
and written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from hrm.atomic import atomic_write_bytes
from hrm.tasks.base import StepBoards

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


def save_figure(fig: Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """PNG of `fig`, atomically. tight=False skips the second layout pass (boards with thousands of labels)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue()))
    return Path(path)


def panel_grid(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns)
    return -(-count // columns), columns


# ---------------------------------------------------------------------------------- boards per step


def _draw_sudoku(
    ax, task, givens: np.ndarray, board: np.ndarray, previous: np.ndarray | None, labels: np.ndarray
) -> None:
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


def plot_sudoku_steps(task, boards: StepBoards, path: str | Path) -> Path:
    """Boards of a Sudoku task of any box shape at the chosen steps: givens bold, cells breaking a rule red, wrong-but-legal grey, changed cells shaded."""
    rows, columns = panel_grid(len(boards.steps))
    fig = Figure(figsize=(2.0 * columns, 2.2 * rows + 0.4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (2.2 * rows + 0.4), wspace=0.08, hspace=0.25)
    previous = None
    for panel, (step, title) in enumerate(zip(boards.steps, boards.titles)):
        ax = fig.add_subplot(rows, columns, panel + 1)
        _draw_sudoku(ax, task, boards.inputs, boards.step_preds[step], previous, boards.labels)
        ax.set_title(title, fontsize=7)
        previous = boards.step_preds[step]
    fig.suptitle("Intermediate predictions (bold: given, red: breaks a rule, grey: wrong, shaded: changed)", fontsize=9)
    return save_figure(fig, path, tight=False)


MAZE_COLOURS = ListedColormap(["#ffffff", "#222222", "#ffffff", "#2ca02c", "#d62728", "#1f77b4"])


def plot_maze_steps(task, boards: StepBoards, path: str | Path) -> Path:
    """The maze with the predicted path (blue) at each chosen step; path cells off the labelled path are orange."""
    side = task.side
    wall, open_, start, goal, path_ = task.WALL, task.OPEN, task.START, task.GOAL, task.PATH
    rows, columns = panel_grid(len(boards.steps))
    fig = Figure(figsize=(2.2 * columns, 2.3 * rows))
    for panel, (step, title) in enumerate(zip(boards.steps, boards.titles)):
        ax = fig.add_subplot(rows, columns, panel + 1)
        board = np.where(np.isin(boards.inputs, (wall, start, goal)), boards.inputs, open_)
        predicted_path = boards.step_preds[step] == path_
        board = np.where(predicted_path & (board == open_), path_, board)
        ax.imshow(board.reshape(side, side), cmap=MAZE_COLOURS, vmin=0, vmax=5, interpolation="nearest")
        off_path = predicted_path & (boards.labels != -100) & (boards.labels != path_)
        missed = ~predicted_path & (boards.labels == path_)
        for cells, style in (
            (off_path, dict(s=4, color="#ff7f0e", marker="s")),
            (missed, dict(s=10, facecolors="none", edgecolors="#1f77b4", marker="s", linewidths=0.8)),
        ):
            if cells.any():
                r, c = np.divmod(np.flatnonzero(cells), side)
                ax.scatter(c, r, **style)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle(
        "Predicted path per step (green: start, red: goal, blue: path, orange dot: off the true path, "
        "hollow square: true path cell missed)",
        fontsize=9,
    )
    return save_figure(fig, path)


ARC_COLOURS = ListedColormap(["#ffffff", "#bbbbbb"] + ARC_PALETTE)


def plot_arc_steps(task, boards: StepBoards, path: str | Path) -> Path:
    """The input grid, the predicted grid at each chosen step (cropped at its end-of-grid marker), and the target."""
    panels = [("input", boards.inputs)] + [
        (title, boards.step_preds[step]) for step, title in zip(boards.steps, boards.titles)
    ]
    if (boards.labels != -100).any():
        panels.append(("target", np.where(boards.labels == -100, 0, boards.labels)))
    rows, columns = panel_grid(len(panels))
    fig = Figure(figsize=(2.0 * columns, 2.2 * rows))
    for panel, (title, tokens) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, panel + 1)
        grid = task.crop(tokens)
        if grid.size:
            ax.imshow(grid + task.COLOUR_OFFSET, cmap=ARC_COLOURS, vmin=0, vmax=11, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no grid", ha="center", va="center", transform=ax.transAxes, fontsize=7)
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("ARC: predicted output grid per step", fontsize=9)
    return save_figure(fig, path)


def plot_token_steps(boards: StepBoards, path: str | Path) -> Path:
    """Any other task: predicted tokens per step as rows of an image, with the label as the last row."""
    rows = [boards.step_preds[s] for s in boards.steps] + (
        [np.where(boards.labels == -100, 0, boards.labels)] if (boards.labels != -100).any() else []
    )
    names = list(boards.titles) + (["label"] if len(rows) > len(boards.steps) else [])
    fig = Figure(figsize=(8, 0.3 * len(rows) + 1))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.stack(rows), aspect="auto", interpolation="nearest", cmap="tab20")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("position")
    ax.set_title("Predicted tokens per step")
    return save_figure(fig, path)
