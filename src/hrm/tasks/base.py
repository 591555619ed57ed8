"""What every task provides, with the answers of a task that knows nothing beyond its tokens (`generic`).

A task is built for one token layout (`vocab_size`, `seq_len`) and owns everything that depends on what
the tokens mean: detection, text and image rendering, rule checks, a label-free verifier, invertible
perturbations and the construction of near-solved puzzles. Tools ask the task instead of testing names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch

from hrm.errors import TaskError
from hrm.tasks.symmetry import DIHEDRAL_INVERSE, dihedral_transform


def grid_side(seq_len: int) -> int | None:
    """Side of the square board a sequence lays out as, or None if it is not a square."""
    side = math.isqrt(seq_len)
    return side if side * side == seq_len else None


def relabel_table(vocab_size: int, mapping: dict[int, int]) -> tuple[int, ...]:
    """A token map over the whole vocabulary: `mapping` where given, identity elsewhere."""
    table = list(range(vocab_size))
    for old, new in mapping.items():
        table[old] = new
    return tuple(table)


@dataclass(frozen=True)
class StepBoards:
    """One puzzle's predictions at chosen reasoning steps, ready to draw: its input and label tokens
    ([seq_len], labels -100 where ignored), the predictions of every step ([num_steps, seq_len]), the steps
    to show and a title for each."""

    inputs: np.ndarray
    step_preds: np.ndarray
    labels: np.ndarray
    steps: Sequence[int]
    titles: Sequence[str]


@dataclass(frozen=True)
class Perturbation:
    """An invertible change of a puzzle: a token relabelling, then a dihedral transform of the board.

    `apply` maps a puzzle's tokens to the perturbed puzzle; `undo` maps an answer of the perturbed
    puzzle back to the original's frame, so answers of different perturbations can be compared.
    """

    name: str
    transform_id: int
    token_map: tuple[int, ...]  # token_map[t] = new token; identity where untouched

    def _grid(self, tokens: np.ndarray, transform_id: int) -> np.ndarray:
        if transform_id == 0:
            return tokens
        side = grid_side(tokens.shape[-1])
        board = tokens.reshape(tokens.shape[:-1] + (side, side))
        return np.ascontiguousarray(dihedral_transform(board, transform_id)).reshape(tokens.shape)

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        mapped = np.asarray(self.token_map)[np.asarray(tokens)]
        return self._grid(mapped, self.transform_id)

    def undo(self, tokens: np.ndarray) -> np.ndarray:
        inverse = np.argsort(np.asarray(self.token_map))
        clipped = np.clip(np.asarray(tokens), 0, len(inverse) - 1)
        return inverse[self._grid(clipped, DIHEDRAL_INVERSE[self.transform_id])]


def relabel_rows(tokens: torch.Tensor, tables: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
    """Row r of `tokens` relabelled by `tables[index[r]]` (or all rows by `tables[index]`); tokens outside the
    vocabulary (the ignore label -100) stay as they are."""
    tables = tables.to(tokens.device)
    vocab = tables.shape[1]
    inside = (tokens >= 0) & (tokens < vocab)
    safe = tokens.clamp(0, vocab - 1).long()
    if isinstance(index, torch.Tensor):
        rows = tables[index.to(tokens.device).long()]  # [B, vocab]
        mapped = torch.gather(rows, 1, safe.reshape(safe.shape[0], -1)).reshape(safe.shape)
    else:
        mapped = tables[int(index)][safe]
    return torch.where(inside, mapped.to(tokens.dtype), tokens)


class Task:
    """A task for one token layout. This base class is the `generic` task: tokens only."""

    name: ClassVar[str] = "generic"
    layout: ClassVar[str] = "any vocab_size and seq_len"

    def __init__(self, vocab_size: int, seq_len: int):
        self.vocab_size, self.seq_len = vocab_size, seq_len

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, seq_len={self.seq_len})"

    # ---------------------------------------------------------------- detection

    @classmethod
    def fits(cls, vocab_size: int, seq_len: int) -> bool:
        """Whether data with this token layout can be this task."""
        return True

    # ---------------------------------------------------------------- codec and rendering

    def parse(self, text: str) -> np.ndarray:
        """A puzzle typed as text, as tokens [seq_len]."""
        raise TaskError(
            f"puzzles as strings exist for sudoku, maze and arc, not for task={self.name}; pass task=sudoku|maze|arc"
        )

    def solve(self, tokens: np.ndarray) -> np.ndarray | None:
        """The labels of a typed puzzle when the task can work them out itself (None: it cannot)."""
        return None

    def text(self, tokens: np.ndarray) -> list[str]:
        """The tokens drawn as lines of text (a square board as rows of characters)."""
        tokens = np.asarray(tokens)
        side = grid_side(tokens.shape[0])
        if side is None:
            return [" ".join(str(t) for t in tokens.tolist())]
        symbols = "0123456789abcdefghijklmnopqrstuvwxyz"
        chars = [symbols[t] if 0 <= t < len(symbols) else "?" for t in tokens.tolist()]
        return ["".join(chars[r * side : (r + 1) * side]) for r in range(side)]

    def plot_steps(self, boards: StepBoards, path: str | Path) -> Path:
        """The predictions at the chosen steps as one figure (generic: rows of tokens, the label last)."""
        from matplotlib.figure import Figure

        from hrm.tasks.figures import save_figure

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

    # ---------------------------------------------------------------- rules and verification

    has_rules: ClassVar[bool] = False  # whether `violation_count` counts rule breaks without labels

    def conflicts(self, tokens: np.ndarray) -> np.ndarray:
        """Boolean mask [..., seq_len] of cells breaking a rule of the task (none for a generic task)."""
        return np.zeros(np.shape(tokens), bool)

    def violation_count(self, tokens: np.ndarray) -> np.ndarray:
        """Number of cells breaking a rule, per board ([..., seq_len] -> [...])."""
        return self.conflicts(tokens).sum(-1)

    verifiable: ClassVar[bool] = False  # whether `verify` can check an answer without labels

    def verify(self, inputs: np.ndarray, prediction: np.ndarray) -> bool:
        """Label-free check that `prediction` is a valid answer to `inputs`."""
        raise TaskError(f"task={self.name} has no label-free answer check")

    # ---------------------------------------------------------------- perturbations

    @property
    def symmetries(self) -> tuple[int, ...]:
        """Dihedral transform ids that map a valid puzzle to a valid puzzle (all 8 on a square board)."""
        return tuple(range(8)) if grid_side(self.seq_len) is not None else (0,)

    def relabellings(self, count: int, rng: np.random.Generator) -> list[tuple[str, tuple[int, ...]]]:
        """Named token maps that keep a puzzle valid, the identity first."""
        return [("plain", relabel_table(self.vocab_size, {}))]

    def perturbations(self, count: int, seed: int = 0) -> list[Perturbation]:
        """Up to `count` validity-preserving perturbations (relabellings x symmetries), the identity first,
        ordered so that a small count still mixes symmetries and relabellings."""
        relabels = self.relabellings(count, np.random.default_rng(seed))
        indexed = [(r, t) for r in range(len(relabels)) for t in self.symmetries]
        indexed.sort(key=lambda rt: (max(rt), rt))
        return [Perturbation(f"{relabels[r][0]}/d{t}", t, relabels[r][1]) for r, t in indexed[:count]]

    def input_perturbations(self) -> torch.Tensor:
        """Augmented HRM's perturbations as token tables [P, vocab]: pass k of a puzzle sees
        its tokens relabelled by row k. Only tasks with a label-free verifier take part."""
        raise TaskError(
            f"task={self.name!r} has no input perturbation; use a Sudoku or maze dataset (task=sudoku or task=maze)"
        )

    def perturb_rows(self, tokens: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
        return relabel_rows(tokens, self.input_perturbations(), index)

    def unperturb_rows(self, tokens: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
        return relabel_rows(tokens, torch.argsort(self.input_perturbations(), dim=1), index)

    # ---------------------------------------------------------------- near-solved puzzles

    def unknown_cells(self, boards: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
        """Puzzles made from solved boards by hiding `count` cells of each (the unknown-cells experiment)."""
        raise TaskError(
            f"the unknown-cells experiment blanks cells of solved Sudoku boards, and the task is {self.name}"
        )

    supports_unknowns: ClassVar[bool] = False
