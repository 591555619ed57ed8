"""Figures for the analyses, drawn from the plain data the computing functions return.

Figures are built on matplotlib's object API with the Agg canvas (no pyplot state, no display needed)
and written atomically as PNG. Boards are drawn by their task (`Task.plot_steps`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from hrm.tasks.figures import save_figure


def choose_steps(num_steps: int, max_panels: int, must_include: Sequence[int | None] = ()) -> list[int]:
    """Evenly spaced step indices from first to last, plus the ones asked for (e.g. around the critical step)."""
    chosen = set(np.linspace(0, num_steps - 1, num=min(max_panels, num_steps)).round().astype(int).tolist())
    for step in must_include:
        if step is not None and 0 <= step < num_steps:
            chosen.add(int(step))
    return sorted(chosen)


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
    ax.plot(
        residuals["H_at_L_step"],
        H.mean(0),
        color="#d62728",
        marker="o",
        markersize=3,
        linewidth=1.4,
        label="z_H (high level)",
    )
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
        (line,) = ax.plot(projection[puzzle, :, 0], second[puzzle], linewidth=1, alpha=0.8)
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
            ax.plot(
                curve["num_puzzles"],
                curve[module],
                styles.get(name, ":"),
                color=colour,
                marker="o",
                markersize=3,
                label=f"z_{module} {name} (PR {curve[module][-1]:.1f})",
            )
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.set_xlabel("puzzles included")
    ax.set_ylabel("participation ratio")
    ax.set_title("Effective dimensionality of the states")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def plot_error_curves(
    curves: dict,
    critical: Sequence[int | None],
    metric: str,
    num_segments: int,
    steps_per_segment: int,
    path: str | Path,
) -> Path:
    """Per-step error of every traced puzzle (rule violations for Sudoku, else wrong tokens), critical steps marked."""
    fig = Figure(figsize=(8, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    values = np.asarray(curves[metric], dtype=float)  # [B, steps]
    for puzzle, row in enumerate(values):
        (line,) = ax.plot(np.arange(row.size), row, linewidth=1, label=f"puzzle {puzzle}")
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
        (line,) = ax.plot(segments, 1 / (1 + np.exp(-q_halt[puzzle])), linewidth=1.2, label=f"halt, puzzle {puzzle}")
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
            ax.bar(
                index, size, bottom=bottom, color="#2ca02c" if correct else "#bbbbbb", edgecolor="black", linewidth=0.5
            )
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
    ax.plot(
        [b["mean_confidence"] for b in bins],
        [b["accuracy"] for b in bins],
        "o",
        color="#d62728",
        markersize=4,
        label="mean confidence",
    )
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
