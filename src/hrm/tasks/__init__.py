"""Tasks own their knowledge: which data they are, how their tokens read and draw, their rules, verifier,
perturbations and near-solved puzzles. Tools ask `detect` or `resolve` for the task of their data.

Adding a task: write a `Task` subclass in its own module and add it to `REGISTRY` (see docs/datasets.md, "Adding a task").
"""

from __future__ import annotations

from hrm.errors import ConfigError
from hrm.tasks.arc import ArcGridTask
from hrm.tasks.base import Perturbation, StepBoards, Task, grid_side
from hrm.tasks.maze import MazeTask
from hrm.tasks.sudoku import SudokuTask

# Detection tries the tasks in this order; `generic` fits everything and comes last.
REGISTRY: dict[str, type[Task]] = {"sudoku": SudokuTask, "maze": MazeTask, "arc": ArcGridTask, "generic": Task}
TASK_NAMES = tuple(REGISTRY)


def _layout(metadata_or_vocab, seq_len: int | None) -> tuple[int, int]:
    if seq_len is None:
        return int(metadata_or_vocab.vocab_size), int(metadata_or_vocab.seq_len)
    return int(metadata_or_vocab), int(seq_len)


def detect(metadata_or_vocab, seq_len: int | None = None) -> Task:
    """The task of data with this token layout: `detect(metadata)` or `detect(vocab_size, seq_len)`."""
    vocab_size, seq_len = _layout(metadata_or_vocab, seq_len)
    cls = next(cls for cls in REGISTRY.values() if cls.fits(vocab_size, seq_len))
    return cls(vocab_size, seq_len)


def detect_name(vocab_size: int, seq_len: int) -> str:
    return detect(vocab_size, seq_len).name


def resolve(name: str | Task, metadata_or_vocab, seq_len: int | None = None, where: str = "the data") -> Task:
    """The task `name` (or `auto`: detected) for data with this layout; a one-line ConfigError when the
    name is unknown or the data is not that task (e.g. task=arc on a Sudoku checkpoint). A task passes through."""
    if isinstance(name, Task):
        return name
    vocab_size, seq_len = _layout(metadata_or_vocab, seq_len)
    if name == "auto":
        return detect(vocab_size, seq_len)
    if name not in REGISTRY:
        raise ConfigError(f"task={name!r} is unknown; choose auto or one of {', '.join(TASK_NAMES)}")
    cls = REGISTRY[name]
    if not cls.fits(vocab_size, seq_len):
        raise ConfigError(
            f"task={name} does not fit {where} (vocab_size {vocab_size}, seq_len {seq_len}; {name} needs "
            f"{cls.layout}); use task=auto or the task the model was trained on"
        )
    return cls(vocab_size, seq_len)


__all__ = [
    "REGISTRY",
    "TASK_NAMES",
    "ArcGridTask",
    "MazeTask",
    "Perturbation",
    "StepBoards",
    "SudokuTask",
    "Task",
    "detect",
    "detect_name",
    "grid_side",
    "resolve",
]
