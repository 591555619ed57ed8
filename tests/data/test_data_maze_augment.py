"""Dihedral/colour transforms invert exactly; generated mazes have one shortest path; maze CSV checks."""

from collections import deque

import numpy as np
import pytest

from hrm.data import maze
from hrm.errors import DatasetError
from hrm.tasks.symmetry import (
    DIHEDRAL_INVERSE,
    dihedral_transform,
    inverse_colour_map,
    inverse_dihedral,
    random_colour_maps,
)


@pytest.mark.parametrize("tid", range(8))
def test_dihedral_transforms_invert_and_match_their_definition(tid):
    grid = np.arange(12).reshape(3, 4)
    expected = [
        grid,
        np.rot90(grid),
        np.rot90(grid, 2),
        np.rot90(grid, 3),
        np.fliplr(grid),
        np.flipud(grid),
        grid.T,
        np.fliplr(np.rot90(grid)),
    ][tid]
    np.testing.assert_array_equal(dihedral_transform(grid, tid), expected)
    np.testing.assert_array_equal(inverse_dihedral(dihedral_transform(grid, tid), tid), grid)
    np.testing.assert_array_equal(dihedral_transform(dihedral_transform(grid, tid), DIHEDRAL_INVERSE[tid]), grid)
    stack = np.stack([grid, grid + 100])
    np.testing.assert_array_equal(dihedral_transform(stack, tid)[1], expected + 100)


def test_colour_maps_fix_zero_and_invert():
    maps = random_colour_maps(np.random.default_rng(0), 50)
    grid = np.random.default_rng(1).integers(0, 10, size=(5, 7))
    for colour_map in maps:
        assert colour_map[0] == 0 and sorted(colour_map.tolist()) == list(range(10))
        np.testing.assert_array_equal(inverse_colour_map(colour_map)[colour_map[grid]], grid)


def bfs_count(grid_chars: np.ndarray):
    """Independent BFS: distance S->G and the number of shortest paths."""
    side = grid_chars.shape[0]
    start = tuple(np.argwhere(grid_chars == ord("S"))[0])
    goal = tuple(np.argwhere(grid_chars == ord("G"))[0])
    dist, ways = {start: 0}, {start: 1}
    queue = deque([start])
    while queue:
        r, c = queue.popleft()
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < side and 0 <= nc < side and grid_chars[nr, nc] != ord("#"):
                if (nr, nc) not in dist:
                    dist[(nr, nc)] = dist[(r, c)] + 1
                    ways[(nr, nc)] = ways[(r, c)]
                    queue.append((nr, nc))
                elif dist[(nr, nc)] == dist[(r, c)] + 1:
                    ways[(nr, nc)] += ways[(r, c)]
    return dist[goal], ways[goal]


@pytest.mark.parametrize("size, min_len", [(9, 6), (12, 15), (30, 110)])
def test_generated_mazes_have_a_unique_labelled_shortest_path(size, min_len):
    mazes = maze.generate_mazes(4, size=size, min_path_len=min_len, seed=size)
    for question, answer, rating in zip(mazes.questions, mazes.answers, mazes.ratings):
        assert question.shape == (size, size)
        distance, ways = bfs_count(question)
        assert ways == 1
        path = answer == ord("o")
        assert path.sum() == distance - 1 == rating and rating > min_len
        # the labelled cells are open in the question and form the path: walking only on them reaches G
        assert np.all(question[path] == ord(" "))
        blocked = np.where(path | (question == ord("S")) | (question == ord("G")), question, ord("#")).astype(np.uint8)
        assert bfs_count(blocked) == (distance, 1)
        assert np.array_equal(np.where(path, ord(" "), answer), question)


def test_impossible_maze_request_is_a_one_line_error():
    with pytest.raises(DatasetError, match="lower --min-difficulty"):
        maze.generate_mazes(1, size=7, min_path_len=200, seed=0)


def test_augmented_maze_split_holds_the_eight_dihedral_copies():
    mazes = maze.generate_mazes(2, size=9, min_path_len=4, seed=3)
    arrays = maze.build_split_arrays(mazes, augment=True)
    assert arrays["inputs"].shape == (16, 81) and arrays["inputs"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["group_indices"], [0, 8, 16])
    for tid in range(8):
        copy = arrays["labels"][8 + tid].reshape(9, 9)
        np.testing.assert_array_equal(inverse_dihedral(copy, tid), maze.to_tokens(mazes.answers[1]))
    assert set(np.unique(arrays["labels"]).tolist()) <= {1, 2, 3, 4, 5}


def _csv(tmp_path, question, answer):
    path = tmp_path / "train.csv"
    path.write_text(f"source,question,answer,rating\nx,{question},{answer},3\n")
    return path


def test_maze_csv_round_trip_and_errors(tmp_path):
    mazes = maze.generate_mazes(1, size=7, min_path_len=2, seed=1)
    question, answer = mazes.questions[0].tobytes().decode(), mazes.answers[0].tobytes().decode()
    loaded = maze.read_maze_csv(_csv(tmp_path, question, answer))
    np.testing.assert_array_equal(loaded.answers[0], mazes.answers[0])
    with pytest.raises(DatasetError, match=r"train.csv:2: answer has 48 characters"):
        maze.read_maze_csv(_csv(tmp_path, question, answer[:-1]))
    with pytest.raises(DatasetError, match="'x' at position"):
        maze.read_maze_csv(_csv(tmp_path, question, "x" + answer[1:]))
    wall = answer.index("#")
    with pytest.raises(DatasetError, match="only open cells may become 'o'"):
        maze.read_maze_csv(_csv(tmp_path, question, answer[:wall] + "o" + answer[wall + 1 :]))
