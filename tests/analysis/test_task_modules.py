"""hrm.tasks for the other layouts: 6x6 (2x3 boxes) and 4x4 Sudoku rules, text, perturbations, verifier,
solver; mazes of any size; the generic task; and the evaluator's per-row relabelling."""

import itertools

import numpy as np
import pytest
import torch

from hrm.data.mini_sudoku import generate_puzzles
from hrm.errors import TaskError
from hrm.tasks import MazeTask, SudokuTask, Task, detect
from hrm.tasks.base import relabel_rows

from .helpers import maze_examples


def _brute_force_conflicts(tokens, side, box_rows, box_cols):
    board = np.asarray(tokens).reshape(side, side)
    out = np.zeros((side, side), bool)
    for (r1, c1), (r2, c2) in itertools.permutations(itertools.product(range(side), range(side)), 2):
        same = r1 == r2 or c1 == c2 or (r1 // box_rows, c1 // box_cols) == (r2 // box_rows, c2 // box_cols)
        if same and 2 <= board[r1, c1] <= side + 1 and board[r1, c1] == board[r2, c2]:
            out[r1, c1] = True
    return out.reshape(-1)


@pytest.fixture(scope="module")
def mini():
    puzzles, solutions, _ = generate_puzzles(4, seed=3)
    return SudokuTask(8, 36), puzzles.astype(np.int64) + 1, solutions.astype(np.int64) + 1


def test_6x6_rules_follow_2x3_boxes(mini):
    task, puzzles, solutions = mini
    assert (task.side, task.box_rows, task.box_cols) == (6, 2, 3)
    assert task.violation_count(solutions).tolist() == [0] * 4
    rng = np.random.default_rng(0)
    for board in solutions:
        broken = board.copy()
        broken[rng.choice(36, 4, replace=False)] = rng.integers(2, 8, size=4)
        np.testing.assert_array_equal(task.conflicts(broken), _brute_force_conflicts(broken, 6, 2, 3))


def test_4x4_sudoku_rules():
    task = detect(6, 16)
    assert isinstance(task, SudokuTask) and (task.box_rows, task.box_cols) == (2, 2)
    board = np.array([[1, 2, 3, 4], [3, 4, 1, 2], [2, 1, 4, 3], [4, 3, 2, 1]]).reshape(-1) + 1
    assert task.verify(board, board) and task.violation_count(board) == 0
    bad = board.copy()
    bad[5] = bad[0]  # same box as cell 0
    np.testing.assert_array_equal(task.conflicts(bad), _brute_force_conflicts(bad, 4, 2, 2))


def test_6x6_text_parse_solve_and_verify(mini):
    task, puzzles, solutions = mini
    text = "".join("." if t == 1 else str(t - 1) for t in puzzles[0])
    np.testing.assert_array_equal(task.parse(text), puzzles[0])
    np.testing.assert_array_equal(task.solve(puzzles[0]), solutions[0])
    assert task.verify(puzzles[0], solutions[0]) and not task.verify(puzzles[1], solutions[0])
    lines = task.text(puzzles[0])
    assert len(lines) == 6 + 2 and lines[2] == "------+------"
    with pytest.raises(TaskError, match="36 cells"):
        task.parse("123")


def test_6x6_perturbations_keep_puzzles_valid_and_invert(mini):
    task, puzzles, solutions = mini
    family = task.perturbations(100)
    assert len(family) == 6 * 4  # 6 digit shifts x the 4 box-preserving symmetries
    for p in family:
        moved = p.apply(solutions[0])
        assert task.verify(p.apply(puzzles[0]), moved)
        np.testing.assert_array_equal(p.undo(moved), solutions[0])


def test_evaluator_relabelling_per_row_keeps_ignored_labels(mini):
    task, _, solutions = mini
    labels = torch.tensor(solutions[:2])
    labels[:, :3] = -100
    shifts = torch.tensor([0, 5])
    moved = task.perturb_rows(labels, shifts)
    assert (moved[:, :3] == -100).all() and torch.equal(moved[0], labels[0])
    assert torch.equal(task.unperturb_rows(moved, shifts), labels)
    assert len(task.input_perturbations()) == 6
    tables = torch.tensor([[0, 1, 2], [0, 2, 1]])
    assert relabel_rows(torch.tensor([[1, 2], [1, 2]]), tables, torch.tensor([0, 1])).tolist() == [[1, 2], [2, 1]]


def test_maze_of_any_size_and_generic_task():
    inputs, labels = maze_examples(2, side=7)
    task = detect(6, 49)
    assert isinstance(task, MazeTask) and task.verify(inputs[0], labels[0])
    assert task.text(inputs[0])[0] == "#######"
    swapped = [p for p in task.perturbations(16) if p.name.startswith("swapSG")][0]
    assert task.verify(swapped.apply(inputs[0]), swapped.apply(labels[0]))
    generic = detect(7, 12)
    assert type(generic) is Task and not generic.has_rules and not generic.verifiable
    assert [p.name for p in generic.perturbations(8)] == ["plain/d0"]  # not a square: no symmetries
    with pytest.raises(TaskError):
        generic.unknown_cells(np.zeros((1, 12), np.int64), 1, np.random.default_rng(0))
