"""Mazes of any square size (Maze-Hard is 30x30): find the shortest path from start to goal.

Tokens: pad 0, then the characters `# SGo` (wall, open, start, goal, path) as 1..5.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from hrm.errors import TaskError
from hrm.tasks.base import StepBoards, Task, grid_side, relabel_table

CHARSET = "# SGo"
WALL, OPEN, START, GOAL, PATH = 1, 2, 3, 4, 5
VOCAB_SIZE = len(CHARSET) + 1
MAZE_PALETTE = ["#ffffff", "#222222", "#ffffff", "#2ca02c", "#d62728", "#1f77b4"]  # pad, wall, open, start, goal, path


def shortest_distance(open_cells: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> int | None:
    """BFS steps from start to goal through `open_cells` (4-connected); None when unreachable."""
    rows, cols = open_cells.shape
    distance = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == goal:
            return distance[cell]
        r, c = cell
        for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= nr < rows and 0 <= nc < cols and open_cells[nr, nc] and (nr, nc) not in distance:
                distance[(nr, nc)] = distance[cell] + 1
                queue.append((nr, nc))
    return None


class MazeTask(Task):
    name: ClassVar[str] = "maze"
    layout: ClassVar[str] = "vocab_size 6 and a square seq_len"
    verifiable: ClassVar[bool] = True
    WALL, OPEN, START, GOAL, PATH = WALL, OPEN, START, GOAL, PATH

    def __init__(self, vocab_size: int, seq_len: int):
        super().__init__(vocab_size, seq_len)
        self.side = grid_side(seq_len)

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> bool:
        return vocab_size == VOCAB_SIZE and grid_side(seq_len) is not None

    def parse(self, text: str) -> np.ndarray:
        """A maze drawn with `# SGo` (rows separated by newlines or `|`, or one string of side^2 characters)."""
        flat = "".join(row for row in text.replace("|", "\n").split("\n") if row)
        bad = next((index for index, ch in enumerate(flat) if ch not in CHARSET), None)
        if bad is not None:
            raise TaskError(
                f"a maze is drawn with the characters '{CHARSET}' (wall, open, start, goal, path), "
                f"but cell {bad + 1} is {flat[bad]!r}"
            )
        if grid_side(len(flat)) is None:
            raise TaskError(
                f"a maze needs a square grid of the characters '{CHARSET}' (wall, open, start, goal, path), "
                f"got {len(flat)} characters; pass rows separated by | or a file via puzzle_file=PATH"
            )
        return np.array([CHARSET.index(ch) + 1 for ch in flat], dtype=np.int64)

    def text(self, tokens: np.ndarray) -> list[str]:
        symbols = "?" + CHARSET
        chars = [symbols[t] if 0 <= t < len(symbols) else "?" for t in np.asarray(tokens).tolist()]
        return ["".join(chars[r * self.side : (r + 1) * self.side]) for r in range(self.side)]

    def plot_steps(self, boards: StepBoards, path: str | Path) -> Path:
        """The maze with the predicted path (blue) at each chosen step; path cells off the labelled path are orange."""
        from matplotlib.colors import ListedColormap
        from matplotlib.figure import Figure

        from hrm.tasks.figures import panel_grid, save_figure

        side = self.side
        wall, open_, start, goal, path_ = self.WALL, self.OPEN, self.START, self.GOAL, self.PATH
        rows, columns = panel_grid(len(boards.steps))
        fig = Figure(figsize=(2.2 * columns, 2.3 * rows))
        for panel, (step, title) in enumerate(zip(boards.steps, boards.titles)):
            ax = fig.add_subplot(rows, columns, panel + 1)
            board = np.where(np.isin(boards.inputs, (wall, start, goal)), boards.inputs, open_)
            predicted_path = boards.step_preds[step] == path_
            board = np.where(predicted_path & (board == open_), path_, board)
            ax.imshow(
                board.reshape(side, side), cmap=ListedColormap(MAZE_PALETTE), vmin=0, vmax=5, interpolation="nearest"
            )
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

    def verify(self, inputs: np.ndarray, prediction: np.ndarray) -> bool:
        """The prediction equals the maze except that some open cells are marked as path, and those cells
        joined to start and goal form a 4-connected path exactly as long as the maze's shortest path."""
        maze = np.asarray(inputs)
        if maze.ndim == 1:
            side = grid_side(maze.size)
            maze = maze.reshape(side, side)
        grid = np.asarray(prediction).reshape(maze.shape)
        on_path = grid == PATH
        if (on_path & (maze != OPEN)).any() or (grid[~on_path] != maze[~on_path]).any():
            return False
        starts, goals = np.argwhere(maze == START), np.argwhere(maze == GOAL)
        if len(starts) != 1 or len(goals) != 1:
            return False
        start, goal = tuple(starts[0].tolist()), tuple(goals[0].tolist())
        shortest = shortest_distance(maze != WALL, start, goal)
        if shortest is None:
            return False
        along_path = shortest_distance(on_path | (maze == START) | (maze == GOAL), start, goal)
        return along_path == shortest and int(on_path.sum()) == shortest - 1

    def swap_ends(self) -> tuple[int, ...]:
        """Start and goal exchanged: the shortest path is the same set of cells. Its own inverse."""
        return relabel_table(self.vocab_size, {START: GOAL, GOAL: START})

    def relabellings(self, count: int, rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
        return [("plain", relabel_table(self.vocab_size, {})), ("swapSG", self.swap_ends())]

    def input_perturbations(self) -> torch.Tensor:
        return torch.tensor([relabel_table(self.vocab_size, {}), self.swap_ends()], dtype=torch.long)
