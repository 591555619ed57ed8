import numpy as np
import pytest
import torch

from hrm.evaluation import augmented as aug
from hrm.evaluation.augmented import Pass, PuzzleResult
from hrm.tasks import MazeTask, SudokuTask, detect_name

SUDOKU, MAZE = SudokuTask(11, 81), MazeTask(6, 900)

IGN = -100


def sudoku_solution() -> np.ndarray:
    """A valid solved grid (pattern), as tokens 2..10."""
    grid = np.array([[(r * 3 + r // 3 + c) % 9 + 1 for c in range(9)] for r in range(9)])
    return grid + 1


def sudoku_puzzle(solution: np.ndarray, blanks: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    puzzle = solution.copy().reshape(-1)
    puzzle[rng.choice(81, blanks, replace=False)] = 1
    return puzzle.reshape(9, 9)


def maze() -> tuple[np.ndarray, np.ndarray]:
    """A 5x5 maze with two routes from S (top-left) to G; the lower route is the shortest."""
    text = ["S   #", " ## #", "    G", "#####", "#####"]
    codes = {"#": 1, " ": 2, "S": 3, "G": 4, "o": 5}
    grid = np.array([[codes[ch] for ch in row] for row in text])
    path = grid.copy()
    for r, c in [(1, 0), (2, 0), (2, 1), (2, 2), (2, 3)]:
        path[r, c] = 5
    return grid, path


def test_sudoku_shift_round_trip_and_validity():
    solution = sudoku_solution()
    puzzle = torch.tensor(sudoku_puzzle(solution))
    labels = torch.tensor(solution).reshape(-1)
    labels[:3] = IGN
    for k in range(9):
        shifted = SUDOKU.perturb_rows(puzzle, k)
        assert torch.equal(SUDOKU.unperturb_rows(shifted, k), puzzle)
        assert torch.equal(shifted == 1, puzzle == 1)  # blanks stay blank
        assert SUDOKU.verify(shifted.numpy(), SUDOKU.perturb_rows(torch.tensor(solution), k).numpy())
        assert (SUDOKU.perturb_rows(labels, k)[:3] == IGN).all()
    assert SUDOKU.perturb_rows(torch.tensor([2, 10, 5]), 1).tolist() == [3, 2, 6]
    rows = SUDOKU.perturb_rows(torch.tensor([[2, 2], [2, 2]]), torch.tensor([0, 3]))
    assert rows.tolist() == [[2, 2], [5, 5]]


def test_maze_swap_round_trip():
    grid, path = maze()
    swapped = MAZE.perturb_rows(torch.tensor(grid), 1)
    assert swapped[0, 0] == 4 and swapped[2, 4] == 3
    assert torch.equal(MAZE.perturb_rows(swapped, 1), torch.tensor(grid))
    assert torch.equal(MAZE.perturb_rows(torch.tensor(path), 0), torch.tensor(path))


def test_sudoku_verifier():
    solution = sudoku_solution()
    puzzle = sudoku_puzzle(solution)
    assert SUDOKU.verify(puzzle, solution)
    broken = solution.copy()
    broken[0, 0], broken[0, 1] = broken[0, 1], broken[0, 0]  # rows still fine, columns broken
    assert not SUDOKU.verify(puzzle, broken)
    relabelled = SUDOKU.perturb_rows(torch.tensor(solution), 1).numpy()  # valid grid, but drops the givens
    assert not SUDOKU.verify(puzzle, relabelled)
    with_blank = solution.copy()
    with_blank[4, 4] = 1
    assert not SUDOKU.verify(puzzle, with_blank)


def test_maze_shortest_path_check():
    grid, path = maze()
    assert MAZE.verify(grid, path)
    longer = grid.copy()
    for r, c in [(0, 1), (0, 2), (0, 3), (1, 3), (2, 3)]:  # the upper route is as long: still shortest
        longer[r, c] = 5
    assert MAZE.verify(grid, longer)
    broken = path.copy()
    broken[2, 2] = 2  # a gap
    assert not MAZE.verify(grid, broken)
    extra = path.copy()
    extra[0, 1] = 5  # a detour cell
    assert not MAZE.verify(grid, extra)
    through_wall = path.copy()
    through_wall[1, 1] = 5
    assert not MAZE.verify(grid, through_wall)
    moved_goal = path.copy()
    moved_goal[2, 4] = 2
    assert not MAZE.verify(grid, moved_goal)


def test_maze_detour_is_not_shortest():
    grid = np.array([[3, 2, 2, 4], [2, 1, 1, 2], [2, 2, 2, 2]])
    detour = grid.copy()
    for r, c in [(1, 0), (2, 0), (2, 1), (2, 2), (2, 3), (1, 3)]:
        detour[r, c] = 5
    assert not MAZE.verify(grid, detour)  # valid path, but 7 steps vs 3
    direct = grid.copy()
    direct[0, 1] = direct[0, 2] = 5
    assert MAZE.verify(grid, direct)


def _p(answer, confidence=0.5, counted=True, checkpoint=0, perturbation=0):
    return Pass(checkpoint, perturbation, np.array(answer), confidence, counted)


def test_majority_counts_only_counted_passes_and_breaks_ties_by_confidence():
    passes = [
        _p([1], 0.2),
        _p([1], 0.3),
        _p([2], 0.9),
        _p([2], 0.8),
        _p([3], 0.99, counted=False),
        _p([3], 0.99, counted=False),
        _p([3], 0.99, counted=False),
    ]
    assert aug.select_majority(passes).prediction.tolist() == [2]  # [1] and [2] tie; [2] is more confident
    only_uncounted = [_p([4], 0.1, counted=False), _p([5], 0.9, counted=False)]
    assert aug.select_majority(only_uncounted).prediction.tolist() == [5]  # fallback to all passes
    assert aug.select_majority([]) is None


def test_verified_selection_prefers_a_valid_grid():
    solution = sudoku_solution()
    puzzle = sudoku_puzzle(solution)
    wrong = solution.copy()
    wrong[0, 0], wrong[0, 1] = wrong[0, 1], wrong[0, 0]
    passes = [_p(wrong, 0.9), _p(wrong, 0.9), _p(solution, 0.1), _p(solution, 0.9, counted=False)]
    verify = SUDOKU.verify
    assert np.array_equal(aug.select_verified(passes, puzzle, verify).prediction, solution)
    assert np.array_equal(aug.select_majority(passes).prediction, wrong)
    no_valid = [_p(wrong, 0.9)]
    assert np.array_equal(aug.select_verified(no_valid, puzzle, verify).prediction, wrong)  # falls back to the majority


def test_paper_metric_needs_more_than_half_of_one_checkpoints_counted_passes():
    def passes(correct_counted):
        return [Pass(ckpt, i, np.zeros(1), 0.5, counted, correct) for ckpt, i, counted, correct in correct_counted]

    # checkpoint 0: 1 of 2 counted correct (not more than half); checkpoint 1: 2 of 3
    assert aug.paper_solved(
        passes([(0, 0, True, True), (0, 1, True, False), (1, 0, True, True), (1, 1, True, True), (1, 2, True, False)])
    )
    assert not aug.paper_solved(
        passes([(0, 0, True, True), (0, 1, True, False), (1, 0, False, True), (1, 1, True, False)])
    )
    assert not aug.paper_solved(passes([(0, 0, False, True)]))  # uncounted passes never count


def test_tally_on_hand_made_puzzles():
    solution = sudoku_solution()
    puzzle = sudoku_puzzle(solution)
    wrong = solution.copy()
    wrong[0, 0], wrong[0, 1] = wrong[0, 1], wrong[0, 0]
    labels = solution.reshape(-1)
    solved_by_vote = PuzzleResult(
        puzzle.reshape(-1),
        labels,
        [_p(solution.reshape(-1)), _p(solution.reshape(-1), perturbation=1), _p(wrong.reshape(-1), perturbation=2)],
    )
    verifier_only = PuzzleResult(
        puzzle.reshape(-1),
        labels,
        [_p(wrong.reshape(-1)), _p(wrong.reshape(-1), perturbation=1), _p(solution.reshape(-1), perturbation=2)],
    )
    summary = aug.summarize_tally(aug.tally_puzzles([solved_by_vote, verifier_only], SUDOKU))
    assert (
        summary["paper_accuracy"] == 0.5 and summary["majority_accuracy"] == 0.5 and summary["verified_accuracy"] == 1.0
    )
    assert summary["single_accuracy"] == 0.5 and summary["any_counted_correct_accuracy"] == 1.0
    assert summary["counted_pass_accuracy"] == pytest.approx(3 / 6)


def test_perturbed_examples_layout():
    from hrm.evaluation.data import TensorExamples

    solution = torch.tensor(sudoku_solution()).reshape(1, -1)
    source = TensorExamples(
        {
            "inputs": solution.clone(),
            "labels": solution.clone(),
            "puzzle_identifiers": torch.zeros(1, dtype=torch.int32),
        }
    )
    rows = aug.PerturbedExamples(source, SUDOKU, 3).gather(torch.arange(3))
    for k in range(3):
        assert torch.equal(rows["inputs"][k], SUDOKU.perturb_rows(solution[0], k))
        assert torch.equal(rows["labels"][k], rows["inputs"][k])


def test_task_detection_and_bad_permutes():
    assert detect_name(11, 81) == "sudoku" and detect_name(6, 900) == "maze" and detect_name(12, 900) == "arc"
    assert detect_name(8, 36) == "sudoku" and aug.resolve_task("auto", 8, 36, 6).side == 6
    with pytest.raises(Exception, match="permutes=10"):
        aug.resolve_task("sudoku", 11, 81, 10)
    with pytest.raises(Exception, match="Sudoku and maze"):
        aug.resolve_task("auto", 7, 12, 2)


def test_verifiers_accept_the_builders_answers():
    """Cross-check against the dataset builders: every generated answer passes its verifier, and its
    start/goal-swapped or digit-shifted version round-trips."""
    from hrm.data.maze import generate_mazes, to_tokens
    from hrm.data.sudoku import generate_sudokus

    mazes = generate_mazes(6, size=9, min_path_len=8, seed=0)
    for question, answer in zip(to_tokens(mazes.questions), to_tokens(mazes.answers)):
        question, answer = np.asarray(question, np.int64), np.asarray(answer, np.int64)
        assert MAZE.verify(question, answer)
        swapped = MAZE.perturb_rows(torch.tensor(answer), 1).numpy()
        assert MAZE.verify(MAZE.perturb_rows(torch.tensor(question), 1).numpy(), swapped)
    sudokus = generate_sudokus(3, seed=0, progress=False)
    for puzzle, solution in zip(sudokus.puzzles.astype(np.int64) + 1, sudokus.solutions.astype(np.int64) + 1):
        assert SUDOKU.verify(puzzle, solution)
        for k in (1, 5):
            assert SUDOKU.verify(
                SUDOKU.perturb_rows(torch.tensor(puzzle), k).numpy(),
                SUDOKU.perturb_rows(torch.tensor(solution), k).numpy(),
            )
