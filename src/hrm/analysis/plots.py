"""Figures for the analyses, drawn from the plain data the computing functions return.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display needed)
and written atomically as PNG.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter
from matplotlib.patches import Rectangle

from hrm.analysis.tasks import ARC_COLOUR_OFFSET, MAZE_GOAL, MAZE_OPEN, MAZE_PATH, MAZE_START, MAZE_WALL, crop_arc_grid, grid_side, sudoku_conflicts
from hrm.checkpoint import atomic_write_bytes

ARC_PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]


def save_figure(fig: Figure, path: str | Path, dpi: int = 110, tight: bool = True) -> Path:
    """PNG of `fig`, atomically. tight=False skips the second layout pass (boards with thousands of labels)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, lambda handle: handle.write(buffer.getvalue()))
    return Path(path)


def _panel_grid(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns)
    return -(-count // columns), columns


def choose_steps(num_steps: int, max_panels: int, must_include: Sequence[int | None] = ()) -> list[int]:
    """Evenly spaced step indices from first to last, plus the ones asked for (e.g. around the critical step)."""
    chosen = set(np.linspace(0, num_steps - 1, num=min(max_panels, num_steps)).round().astype(int).tolist())
    for step in must_include:
        if step is not None and 0 <= step < num_steps:
            chosen.add(int(step))
    return sorted(chosen)


# ---------------------------------------------------------------------------------- boards per step


def _draw_sudoku(ax, givens: np.ndarray, board: np.ndarray, previous: np.ndarray | None, labels: np.ndarray) -> None:
    conflicts = sudoku_conflicts(board)
    for cell in range(81):
        r, c = divmod(cell, 9)
        if previous is not None and previous[cell] != board[cell]:
            ax.add_patch(Rectangle((c, r), 1, 1, color="#ffe08a", zorder=0))
        token = int(board[cell])
        if not 2 <= token <= 10:
            continue
        is_given = givens[cell] >= 2
        wrong = labels[cell] != -100 and labels[cell] != token
        color = "#d62728" if conflicts[cell] else ("#7f7f7f" if wrong else "black")
        ax.text(c + 0.5, r + 0.55, str(token - 1), ha="center", va="center", fontsize=7,
                fontweight="bold" if is_given else "normal", color=color)
    widths = [1.4 if line % 3 == 0 else 0.3 for line in range(10)]
    ax.vlines(range(10), 0, 9, colors="black", linewidths=widths)
    ax.hlines(range(10), 0, 9, colors="black", linewidths=widths)
    ax.set_xlim(0, 9)
    ax.set_ylim(9, 0)
    ax.set_aspect("equal")
    ax.axis("off")


def plot_sudoku_steps(inputs: np.ndarray, step_preds: np.ndarray, labels: np.ndarray, steps: Sequence[int],
                      titles: Sequence[str], path: str | Path) -> Path:
    """Boards at the chosen steps: givens bold, cells breaking a rule red, wrong-but-legal grey, changed cells shaded."""
    rows, columns = _panel_grid(len(steps))
    fig = Figure(figsize=(2.0 * columns, 2.2 * rows + 0.4))
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / (2.2 * rows + 0.4), wspace=0.08, hspace=0.25)
    previous = None
    for panel, (step, title) in enumerate(zip(steps, titles)):
        ax = fig.add_subplot(rows, columns, panel + 1)
        _draw_sudoku(ax, inputs, step_preds[step], previous, labels)
        ax.set_title(title, fontsize=7)
        previous = step_preds[step]
    fig.suptitle("Intermediate predictions (bold: given, red: breaks a rule, grey: wrong, shaded: changed)", fontsize=9)
    return save_figure(fig, path, tight=False)


MAZE_COLOURS = ListedColormap(["#ffffff", "#222222", "#ffffff", "#2ca02c", "#d62728", "#1f77b4"])


def plot_maze_steps(inputs: np.ndarray, step_preds: np.ndarray, labels: np.ndarray, steps: Sequence[int],
                    titles: Sequence[str], path: str | Path) -> Path:
    """The maze with the predicted path (blue) at each chosen step; path cells off the labelled path are orange."""
    side = grid_side(inputs.shape[-1])
    rows, columns = _panel_grid(len(steps))
    fig = Figure(figsize=(2.2 * columns, 2.3 * rows))
    for panel, (step, title) in enumerate(zip(steps, titles)):
        ax = fig.add_subplot(rows, columns, panel + 1)
        board = np.where(np.isin(inputs, (MAZE_WALL, MAZE_START, MAZE_GOAL)), inputs, MAZE_OPEN)
        predicted_path = step_preds[step] == MAZE_PATH
        board = np.where(predicted_path & (board == MAZE_OPEN), MAZE_PATH, board)
        ax.imshow(board.reshape(side, side), cmap=MAZE_COLOURS, vmin=0, vmax=5, interpolation="nearest")
        off_path = predicted_path & (labels != -100) & (labels != MAZE_PATH)
        missed = ~predicted_path & (labels == MAZE_PATH)
        for cells, style in ((off_path, dict(s=4, color="#ff7f0e", marker="s")),
                             (missed, dict(s=10, facecolors="none", edgecolors="#1f77b4", marker="s", linewidths=0.8))):
            if cells.any():
                r, c = np.divmod(np.flatnonzero(cells), side)
                ax.scatter(c, r, **style)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.suptitle("Predicted path per step (green: start, red: goal, blue: path, orange dot: off the true path, "
                 "hollow square: true path cell missed)", fontsize=9)
    return save_figure(fig, path)


ARC_COLOURS = ListedColormap(["#ffffff", "#bbbbbb"] + ARC_PALETTE)


def plot_arc_steps(inputs: np.ndarray, step_preds: np.ndarray, labels: np.ndarray, steps: Sequence[int],
                   titles: Sequence[str], path: str | Path) -> Path:
    """The input grid, the predicted grid at each chosen step (cropped at its end-of-grid marker), and the target."""
    panels = [("input", inputs)] + [(title, step_preds[step]) for step, title in zip(steps, titles)]
    if (labels != -100).any():
        panels.append(("target", np.where(labels == -100, 0, labels)))
    rows, columns = _panel_grid(len(panels))
    fig = Figure(figsize=(2.0 * columns, 2.2 * rows))
    for panel, (title, tokens) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, panel + 1)
        grid = crop_arc_grid(tokens)
        if grid.size:
            ax.imshow(grid + ARC_COLOUR_OFFSET, cmap=ARC_COLOURS, vmin=0, vmax=11, interpolation="nearest")
        else:
            ax.text(0.5, 0.5, "no grid", ha="center", va="center", transform=ax.transAxes, fontsize=7)
        ax.set_title(title, fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("ARC: predicted output grid per step", fontsize=9)
    return save_figure(fig, path)


def plot_token_steps(inputs: np.ndarray, step_preds: np.ndarray, labels: np.ndarray, steps: Sequence[int],
                     titles: Sequence[str], path: str | Path) -> Path:
    """Any other task: predicted tokens per step as rows of an image, with the label as the last row."""
    rows = [step_preds[s] for s in steps] + ([np.where(labels == -100, 0, labels)] if (labels != -100).any() else [])
    names = list(titles) + (["label"] if len(rows) > len(steps) else [])
    fig = Figure(figsize=(8, 0.3 * len(rows) + 1))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(np.stack(rows), aspect="auto", interpolation="nearest", cmap="tab20")
    ax.set_yticks(range(len(names)), names, fontsize=6)
    ax.set_xlabel("position")
    ax.set_title("Predicted tokens per step")
    return save_figure(fig, path)


# ------------------------------------------------------------------------------------ curves


def _segment_lines(ax, num_segments: int, steps_per_segment: int) -> None:
    for segment in range(1, num_segments):
        ax.axvline(segment * steps_per_segment - 0.5, color="#cccccc", linewidth=0.6, zorder=0)


def plot_residuals(residuals: dict, num_segments: int, steps_per_segment: int, path: str | Path) -> Path:
    """Forward residuals of z_L (every low-level step) and z_H (at the steps where it updates), mean over puzzles."""
    fig = Figure(figsize=(8, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    L = np.asarray(residuals["L"], dtype=float)  # [B, steps]
    H = np.asarray(residuals["H"], dtype=float)
    ax.plot(np.arange(L.shape[1]), L.mean(0), color="#1f77b4", linewidth=1, label="z_L (low level)")
    ax.plot(residuals["H_at_L_step"], H.mean(0), color="#d62728", marker="o", markersize=3, linewidth=1.4, label="z_H (high level)")
    _segment_lines(ax, num_segments, steps_per_segment)
    ax.set_yscale("log")
    ax.set_xlabel("low-level step (grey lines: segment boundaries)")
    ax.set_ylabel("forward residual ||z_i - z_(i-1)||")
    ax.set_title("Hierarchical convergence")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_pca(pca: dict, H_cycles: int, path: str | Path) -> Path:
    """z_H trajectories on their first two principal components; markers at segment ends."""
    projection = np.asarray(pca["projection"], dtype=float)  # [P, steps + 1, k]
    ratio = pca["explained_variance_ratio"]
    fig = Figure(figsize=(5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    second = projection[..., 1] if projection.shape[-1] > 1 else np.zeros(projection.shape[:2])
    for puzzle in range(projection.shape[0]):
        line, = ax.plot(projection[puzzle, :, 0], second[puzzle], linewidth=1, alpha=0.8)
        segment_ends = np.arange(H_cycles, projection.shape[1], H_cycles)
        ax.scatter(projection[puzzle, segment_ends, 0], second[puzzle, segment_ends], s=8, color=line.get_color())
        ax.scatter(projection[puzzle, -1, 0], second[puzzle, -1], s=40, marker="*", color=line.get_color())
    ax.scatter(projection[0, 0, 0], second[0, 0], s=30, marker="s", color="black", label="initial state")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1 else "PC2")
    ax.set_title("z_H trajectory over segments (dots: segment ends, star: final)", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_participation_ratio(curves: dict[str, dict], path: str | Path) -> Path:
    """PR of z_H and z_L against the number of puzzles pooled, for each model (trained, untrained)."""
    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    styles = {"trained": "-", "untrained": "--"}
    for name, curve in curves.items():
        for module, colour in (("H", "#d62728"), ("L", "#1f77b4")):
            ax.plot(curve["num_puzzles"], curve[module], styles.get(name, ":"), color=colour, marker="o", markersize=3,
                    label=f"z_{module} {name} (PR {curve[module][-1]:.1f})")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("puzzles included")
    ax.set_ylabel("participation ratio")
    ax.set_title("Effective dimensionality of the states")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_error_curves(curves: dict, critical: Sequence[int | None], metric: str, num_segments: int,
                      steps_per_segment: int, path: str | Path) -> Path:
    """Per-step error of every traced puzzle (rule violations for Sudoku, else wrong tokens), critical steps marked."""
    fig = Figure(figsize=(8, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    values = np.asarray(curves[metric], dtype=float)  # [B, steps]
    for puzzle, row in enumerate(values):
        line, = ax.plot(np.arange(row.size), row, linewidth=1, label=f"puzzle {puzzle}")
        if critical[puzzle] is not None:
            ax.axvline(critical[puzzle], color=line.get_color(), linestyle=":", linewidth=1)
    _segment_lines(ax, num_segments, steps_per_segment)
    ax.set_xlabel("low-level step (dotted: detected critical step)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title("Error along the reasoning steps")
    if values.shape[0] <= 8:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_q_values(q_values: dict, path: str | Path) -> Path:
    """sigmoid(q_halt) and sigmoid(q_continue) per segment for every traced puzzle."""
    fig = Figure(figsize=(6, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    q_halt = np.asarray(q_values["q_halt"], dtype=float)
    q_continue = np.asarray(q_values["q_continue"], dtype=float)
    segments = np.arange(1, q_halt.shape[1] + 1)
    for puzzle in range(q_halt.shape[0]):
        line, = ax.plot(segments, 1 / (1 + np.exp(-q_halt[puzzle])), linewidth=1.2, label=f"halt, puzzle {puzzle}")
        ax.plot(segments, 1 / (1 + np.exp(-q_continue[puzzle])), linestyle="--", linewidth=1, color=line.get_color())
    ax.set_xlabel("segment (ACT step)")
    ax.set_ylabel("sigmoid(Q)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Q-values per segment (solid: halt, dashed: continue)")
    if q_halt.shape[0] <= 8:
        ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_accuracy_vs_unknowns(data: dict, path: str | Path) -> Path:
    rows = data["rows"]
    unknowns = [row["unknowns"] for row in rows]
    fig = Figure(figsize=(6, 3.6))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(unknowns, [row["accuracy"] for row in rows], marker="o", label="exact accuracy (final segment)")
    ax.plot(unknowns, [row["ever_correct"] for row in rows], marker="^", linestyle="--", label="right at some segment")
    fixed = [row["fixed_point_rate"] if row["fixed_point_rate"] is not None else np.nan for row in rows]
    ax.plot(unknowns, fixed, marker="s", linestyle=":", label="carry stays put once right")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("unknown cells (blanked from solved boards)")
    ax.set_ylabel("fraction of puzzles")
    ax.set_title("Near-solved puzzles and the fixed-point check")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_fixed_points(data: dict, path: str | Path) -> Path:
    """Per puzzle, the perturbed copies stacked by the distinct answer they settle on (green: correct answer)."""
    puzzles = data["puzzles"]
    fig = Figure(figsize=(max(4, 0.5 * len(puzzles) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    for index, puzzle in enumerate(puzzles):
        bottom = 0
        for size, correct in zip(puzzle["answer_sizes"], puzzle["answer_correct"]):
            ax.bar(index, size, bottom=bottom, color="#2ca02c" if correct else "#bbbbbb", edgecolor="black", linewidth=0.5)
            bottom += size
        ax.text(index, bottom + 0.2, str(puzzle["num_distinct_answers"]), ha="center", fontsize=7)
    ax.set_xticks(range(len(puzzles)))
    ax.set_xlabel("puzzle (number on top: distinct answers)")
    ax.set_ylabel("perturbed copies")
    ax.set_title("Several fixed points: answers of perturbed copies (green: correct)")
    return save_figure(fig, path)


def plot_calibration(calibration: dict, path: str | Path) -> Path:
    """Reliability diagram of sigmoid(q_halt) against exact correctness, with ECE and Pearson r."""
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    bins = [b for b in calibration["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1)
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    ax.bar(centres, [b["accuracy"] for b in bins], width=0.09, color="#1f77b4", alpha=0.7, label="accuracy in bin")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="#d62728", markersize=4, label="mean confidence")
    ece, r = calibration["ece"], calibration["pearson_r"]
    ece_text = "n/a" if ece is None else f"{ece:.3f}"
    r_text = "n/a" if r is None else f"{r:.2f}"
    ax.set_title(f"Halting calibration (ECE {ece_text}, Pearson r {r_text}, n={calibration['count']})", fontsize=9)
    ax.set_xlabel("sigmoid(q_halt)")
    ax.set_ylabel("exact accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7)
    return save_figure(fig, path)
