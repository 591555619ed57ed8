"""Task helpers: Sudoku rule checks, puzzle parsing, the solver and invertible perturbations."""

import itertools

import numpy as np
import pytest

from hrm.analysis.data import puzzle_from_string
from hrm.analysis.experiments import _perturb_labels
from hrm.errors import ConfigError, TaskError
from hrm.tasks import ArcGridTask, SudokuTask, detect, detect_name, resolve

from .helpers import maze_examples, solved_sudokus

SUDOKU, ARC = SudokuTask(11, 81), ArcGridTask(12, 900)
sudoku_conflicts, sudoku_violation_count = SUDOKU.conflicts, SUDOKU.violation_count
parse_sudoku, solve_sudoku, parse_arc_grid, crop_arc_grid = SUDOKU.parse, SUDOKU.solve, ARC.parse, ARC.crop


def blank_cells(boards, count, rng):
    return SUDOKU.unknown_cells(boards, count, rng)


def perturbations(task, vocab, seq_len, count, seed=0):
    return resolve(task, vocab, seq_len).perturbations(count, seed=seed)


def _reference_conflicts(tokens):
    """Brute force: a digit cell conflicts if another cell of its row, column or box holds the same digit."""
    board = np.asarray(tokens).reshape(9, 9)
    out = np.zeros((9, 9), bool)
    for (r1, c1), (r2, c2) in itertools.permutations(itertools.product(range(9), range(9)), 2):
        same_unit = r1 == r2 or c1 == c2 or (r1 // 3, c1 // 3) == (r2 // 3, c2 // 3)
        if same_unit and 2 <= board[r1, c1] <= 10 and board[r1, c1] == board[r2, c2]:
            out[r1, c1] = True
    return out.reshape(-1)


def test_sudoku_conflicts_agree_with_brute_force():
    rng = np.random.default_rng(0)
    solved = solved_sudokus(3)
    assert sudoku_violation_count(solved).tolist() == [0, 0, 0]
    for board in solved:
        broken = board.copy()
        cells = rng.choice(81, size=6, replace=False)
        broken[cells[:3]] = rng.integers(2, 11, size=3)
        broken[cells[3:]] = 1  # blanks never conflict
        np.testing.assert_array_equal(sudoku_conflicts(broken), _reference_conflicts(broken))
    assert sudoku_violation_count(np.stack([solved[0], np.full(81, 2)])).tolist() == [0, 81]


def test_task_detection_from_metadata():
    assert detect_name(11, 81) == "sudoku"
    assert detect_name(6, 900) == "maze"
    assert detect_name(12, 900) == "arc"
    assert detect_name(7, 12) == "generic"
    assert (
        detect_name(8, 36) == "sudoku" and detect_name(6, 16) == "sudoku"
    )  # 6x6 (2x3 boxes), 4x4 (mazes start at 5x5)
    mini = detect(8, 36)
    assert (mini.side, mini.box_rows, mini.box_cols) == (6, 2, 3)


def test_explicit_task_is_checked_against_the_data():
    assert resolve("sudoku", 8, 36).side == 6
    with pytest.raises(ConfigError, match="task=arc does not fit"):
        resolve("arc", 11, 81, where="the model")
    with pytest.raises(ConfigError, match="unknown"):
        resolve("chess", 11, 81)


def test_sudoku_string_parsing_and_solving():
    board = solved_sudokus(1, seed=4)[0]
    puzzle = blank_cells(board[None], 45, np.random.default_rng(1))[0]
    text = "".join("." if t == 1 else str(t - 1) for t in puzzle)
    np.testing.assert_array_equal(parse_sudoku(text), puzzle)
    np.testing.assert_array_equal(parse_sudoku(text.replace(".", "0")), puzzle)
    solution = solve_sudoku(puzzle)
    assert solution is not None and sudoku_violation_count(solution) == 0
    assert np.all(solution[puzzle != 1] == puzzle[puzzle != 1])
    examples = puzzle_from_string(text, SUDOKU)
    assert examples.inputs.shape == (1, 81) and (examples.labels[0] == solution).all()
    with pytest.raises(TaskError, match="81 cells"):
        parse_sudoku("123")


def test_blank_cells_blanks_exactly_k_distinct_cells():
    boards = solved_sudokus(5)
    for k in (1, 7, 81):
        blanked = blank_cells(boards, k, np.random.default_rng(k))
        assert ((blanked == 1).sum(-1) == k).all()
        np.testing.assert_array_equal(np.where(blanked == 1, boards, blanked), boards)


@pytest.mark.parametrize("task,vocab,seq_len", [("sudoku", 11, 81), ("maze", 6, 36), ("arc", 12, 900)])
def test_perturbations_are_invertible_and_start_with_identity(task, vocab, seq_len):
    family = perturbations(task, vocab, seq_len, count=16, seed=0)
    assert len(family) == 16 and len({p.name for p in family}) == 16
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, size=(3, seq_len))
    np.testing.assert_array_equal(family[0].apply(tokens), tokens)
    for p in family:
        np.testing.assert_array_equal(p.undo(p.apply(tokens)), tokens)
    labels = np.where(rng.random((seq_len,)) < 0.3, -100, tokens[0])
    for p in family:
        moved = _perturb_labels(p, labels)
        assert ((moved == -100).sum()) == (labels == -100).sum()
        # Padding (0) is never relabelled, so undoing with ignored cells as 0 gives the labels back.
        np.testing.assert_array_equal(p.undo(np.where(moved == -100, 0, moved)), np.where(labels == -100, 0, labels))


def test_perturbations_keep_puzzles_valid():
    board = solved_sudokus(1, seed=2)[0]
    for p in perturbations("sudoku", 11, 81, count=30):
        assert sudoku_violation_count(p.apply(board)) == 0
    inputs, _ = maze_examples(1)
    swapped = [p for p in perturbations("maze", 6, 36, count=16) if p.name.startswith("swapSG")]
    assert swapped
    moved = swapped[0].undo(swapped[0].apply(inputs[0]))
    np.testing.assert_array_equal(moved, inputs[0])
    assert (swapped[0].apply(inputs[0]) == 3).sum() == 1 and (swapped[0].apply(inputs[0]) == 4).sum() == 1


def test_arc_grid_round_trip():
    grid = [[0, 1, 2], [3, 4, 5]]
    canvas = parse_arc_grid("[[0,1,2],[3,4,5]]")
    assert canvas.shape == (900,)
    board = canvas.reshape(30, 30)
    assert (board[2, :3] == 1).all() and (board[:2, 3] == 1).all()
    np.testing.assert_array_equal(crop_arc_grid(canvas), grid)
    with pytest.raises(TaskError, match="JSON"):
        parse_arc_grid("[[10]]")
