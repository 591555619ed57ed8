"""Sudoku builder: augmentation keeps grids valid, hints are easier, generated puzzles are unique, CSV errors."""

import numpy as np
import pytest

from hrm.data import sudoku
from hrm.data.sudoku_solver import generate_puzzle
from hrm.errors import DatasetError


def independent_is_solution(puzzle, solution) -> bool:
    grid = np.asarray(solution).reshape(9, 9)
    groups = list(grid) + list(grid.T) + [grid[r : r + 3, c : c + 3].ravel() for r in (0, 3, 6) for c in (0, 3, 6)]
    rules = all(sorted(g.tolist()) == list(range(1, 10)) for g in groups)
    givens = np.asarray(puzzle).ravel()
    return rules and bool(np.all((givens == 0) | (givens == np.asarray(solution).ravel())))


def count_solutions(puzzle, limit=2) -> int:
    """Plain backtracking with fewest-candidates cell choice; no singles logic shared with the code under test."""
    grid = [int(v) for v in np.asarray(puzzle).ravel()]

    def candidates(cell):
        r, c = divmod(cell, 9)
        used = {grid[r * 9 + k] for k in range(9)} | {grid[k * 9 + c] for k in range(9)}
        br, bc = 3 * (r // 3), 3 * (c // 3)
        used |= {grid[(br + i) * 9 + bc + j] for i in range(3) for j in range(3)}
        return [d for d in range(1, 10) if d not in used]

    def search() -> int:
        blanks = [i for i in range(81) if grid[i] == 0]
        if not blanks:
            return 1
        cell = min(blanks, key=lambda i: len(candidates(i)))
        found = 0
        for digit in candidates(cell):
            grid[cell] = digit
            found += search()
            grid[cell] = 0
            if found >= limit:
                break
        return found

    return search()


@pytest.fixture(scope="module")
def generated():
    return sudoku.generate_sudokus(6, seed=11, progress=False)


def test_generated_puzzles_have_exactly_one_solution(generated):
    for puzzle, solution in zip(generated.puzzles, generated.solutions):
        assert independent_is_solution(puzzle, solution)
        assert count_solutions(puzzle) == 1
    assert np.all(generated.ratings >= 0)


def test_generator_honours_min_difficulty():
    hard = sudoku.generate_sudokus(3, seed=5, min_difficulty=4, progress=False)
    assert np.all(hard.ratings >= 4)


def test_every_augmented_grid_is_valid_and_consistent(generated):
    rng = np.random.Generator(np.random.Philox(seed=1))
    arrays = sudoku.build_split_arrays(generated, num_aug=50, hint=False, rng=rng, progress=False)
    inputs, labels = arrays["inputs"].astype(int) - 1, arrays["labels"].astype(int) - 1
    assert inputs.shape == (6 * 51, 81)
    assert all(independent_is_solution(p, s) for p, s in zip(inputs, labels))
    # originals come first in each group and blanks move but are never created or filled
    np.testing.assert_array_equal(inputs[::51], generated.puzzles)
    blanks = (inputs == 0).sum(axis=1).reshape(6, 51)
    assert np.all(blanks == blanks[:, :1])
    assert len({row.tobytes() for row in inputs}) > 0.95 * len(inputs)  # copies really differ
    np.testing.assert_array_equal(arrays["group_indices"], np.arange(0, 6 * 51 + 1, 51))


def test_transform_components_are_uniform_enough():
    rng = np.random.Generator(np.random.Philox(seed=2))
    source_cell, digit_map = sudoku.random_transforms(rng, 4000)
    transposed = source_cell[:, 1] % 9 == source_cell[:, 0] % 9  # cells (0,0),(0,1) share a column only if transposed
    assert 0.45 < transposed.mean() < 0.55
    assert np.all(digit_map[:, 0] == 0) and np.all(np.sort(digit_map[:, 1:], axis=1) == np.arange(1, 10))


def test_hint_copies_are_easier_with_the_same_label(generated):
    rng = np.random.Generator(np.random.Philox(seed=4))
    arrays = sudoku.build_split_arrays(generated, num_aug=3, hint=True, rng=rng, progress=False)
    inputs, labels = arrays["inputs"].astype(int) - 1, arrays["labels"].astype(int) - 1
    plain, hinted = inputs[0::2], inputs[1::2]
    np.testing.assert_array_equal(labels[0::2], labels[1::2])
    assert np.all((hinted == 0).sum(1) < (plain == 0).sum(1))
    assert np.all((hinted == 0).sum(1) >= 1)
    assert np.all((plain == 0) | (plain == hinted))  # givens kept, only blanks filled
    assert all(independent_is_solution(p, s) for p, s in zip(hinted, labels[1::2]))
    assert len(arrays["group_indices"]) == 7 and arrays["group_indices"][1] == 8


def _write_csv(path, rows):
    path.write_text("source,question,answer,rating\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def _good_row(seed=0):
    puzzle, solution, rating = generate_puzzle(np.random.default_rng(seed))
    question = "".join("." if v == 0 else str(v) for v in puzzle)
    return ["src", question, "".join(map(str, solution)), rating]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda r: r.__setitem__(1, r[1][:-1]), "question has 80 characters"),
        (lambda r: r.__setitem__(1, "x" + r[1][1:]), "'x' at position 1"),
        (lambda r: r.__setitem__(2, r[2][1] + r[2][0] + r[2][2:]), "breaks a Sudoku rule"),
        (lambda r: r.__setitem__(3, "hard"), "rating 'hard'"),
    ],
)
def test_malformed_csv_rows_name_file_and_line(tmp_path, corrupt, message):
    rows = [_good_row(0), _good_row(1)]
    corrupt(rows[1])
    path = tmp_path / "train.csv"
    _write_csv(path, rows)
    with pytest.raises(DatasetError, match=message) as info:
        sudoku.from_csv_rows(sudoku.read_sudoku_rows(path))
    assert f"{path}:3:" in str(info.value) and "\n" not in str(info.value)


def test_answer_disagreeing_with_givens_is_rejected(tmp_path):
    row = _good_row(3)
    given = next(i for i, ch in enumerate(row[1]) if ch != ".")
    question = list(row[1])
    question[given] = str(int(row[2][given]) % 9 + 1)  # a given that the answer contradicts
    row[1] = "".join(question)
    path = tmp_path / "test.csv"
    _write_csv(path, [row])
    with pytest.raises(DatasetError, match="disagrees with the given"):
        sudoku.from_csv_rows(sudoku.read_sudoku_rows(path))


def test_non_utf8_bytes_are_reported_with_their_line(tmp_path):
    path = tmp_path / "train.csv"
    row = _good_row(2)
    path.write_bytes(
        ("source,question,answer,rating\n" + ",".join(map(str, row)) + "\n").encode() + b"x,\xff\xfe,1,2\n"
    )
    with pytest.raises(DatasetError, match=r"train.csv:3: not UTF-8"):
        sudoku.from_csv_rows(sudoku.read_sudoku_rows(path))
