"""Maze-Hard: reading, validating, generating, augmenting and writing.

A maze is a square grid of `#` (wall), space (open), `S` (start), `G` (goal); its label adds `o` on the
cells of the shortest start-to-goal path. Tokens are 1..5 in that character order (pad 0).
The offline generator makes mazes of any size >= 5 whose shortest path is unique and has more than
`min_path_len` `o` cells, which also gives small mazes that train in minutes on a CPU.
"""

from __future__ import annotations

import argparse
import logging
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.data.common import (
    BuildSummary,
    CsvPuzzles,
    OneLineParser,
    add_source_arguments,
    check_counts,
    csv_sources,
    hub_download,
    read_four_column_csv,
    split_single_file,
    write_split,
)
from hrm.data.format import BLANK_IDENTIFIER_NAME, check_output_dir, staged_directory, write_identifiers
from hrm.errors import DatasetError
from hrm.progress import progress_bar
from hrm.tasks.maze import CHARSET, VOCAB_SIZE
from hrm.tasks.symmetry import NUM_DIHEDRAL, dihedral_transform

logger = logging.getLogger(__name__)

WALL, OPEN, START, GOAL, PATH = (ord(ch) for ch in CHARSET)
DEFAULT_REPO = "sapientinc/maze-30x30-hard-1k"
OFFLINE_HINT = "use --source-csv DIR_OR_FILE (train.csv/test.csv with source,question,answer,rating) or --generate N --size 30 --min-difficulty 110"
_CHAR_TO_TOKEN = np.zeros(256, np.uint8)
_CHAR_TO_TOKEN[np.frombuffer(CHARSET.encode(), np.uint8)] = np.arange(1, len(CHARSET) + 1)


@dataclass
class Mazes:
    """Mazes as raw characters `uint8 [N, side, side]` with their labels and ratings (path lengths)."""

    questions: np.ndarray
    answers: np.ndarray
    ratings: np.ndarray

    def __len__(self) -> int:
        return int(self.questions.shape[0])

    def select(self, keep) -> "Mazes":
        return Mazes(self.questions[keep], self.answers[keep], self.ratings[keep])


def to_tokens(chars: np.ndarray) -> np.ndarray:
    return _CHAR_TO_TOKEN[np.asarray(chars, np.uint8)]


def from_csv_rows(rows: CsvPuzzles) -> Mazes:
    """Check every row is one maze with its path labelled; the first bad row is a one-line error."""
    questions, answers = rows.questions, rows.answers
    side = int(round(questions.shape[1] ** 0.5))
    for name, array in (("question", questions), ("answer", answers)):
        for char, label in ((START, "S"), (GOAL, "G")):
            counts = (array == char).sum(axis=1)
            if np.any(counts != 1):
                row = int(np.argmax(counts != 1))
                raise DatasetError(
                    f"{rows.path}:{rows.lines[row]}: the {name} has {counts[row]} '{label}' cells, expected exactly one"
                )
    bad = (answers != questions) & ~((questions == OPEN) & (answers == PATH))
    if bad.any():
        row, cell = np.argwhere(bad)[0]
        raise DatasetError(
            f"{rows.path}:{rows.lines[row]}: the answer differs from the maze at row {cell // side + 1}, column {cell % side + 1} "
            f"({chr(questions[row, cell])!r} -> {chr(answers[row, cell])!r}); only open cells may become 'o'"
        )
    return Mazes(questions.reshape(-1, side, side), answers.reshape(-1, side, side), rows.ratings)


def read_maze_csv(path: str | Path) -> Mazes:
    return from_csv_rows(read_four_column_csv(path, None, b"# SG", CHARSET.encode(), "maze"))


def _neighbours(side: int) -> list[tuple[int, ...]]:
    result = []
    for cell in range(side * side):
        r, c = divmod(cell, side)
        result.append(
            tuple(
                nr * side + nc
                for nr, nc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1))
                if 0 <= nr < side and 0 <= nc < side
            )
        )
    return result


def shortest_paths(open_cells: np.ndarray, start: int, neighbours) -> tuple[np.ndarray, np.ndarray]:
    """BFS from `start` over open cells: (distance, number of shortest paths capped at 2) per cell; -1 = unreachable."""
    n = open_cells.shape[0]
    dist = np.full(n, -1, np.int64)
    count = np.zeros(n, np.int64)
    dist_list = dist.tolist()
    count_list = count.tolist()
    open_list = open_cells.tolist()
    dist_list[start], count_list[start] = 0, 1
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        d = dist_list[cell] + 1
        for nb in neighbours[cell]:
            if not open_list[nb]:
                continue
            if dist_list[nb] < 0:
                dist_list[nb] = d
                count_list[nb] = count_list[cell]
                queue.append(nb)
            elif dist_list[nb] == d:
                count_list[nb] = min(2, count_list[nb] + count_list[cell])
    return np.asarray(dist_list), np.asarray(count_list)


def _carve(rng: np.random.Generator, side: int, loop_fraction: float) -> np.ndarray:
    """A random maze: depth-first spanning tree on the odd lattice, plus a few walls knocked out for loops."""
    grid = np.zeros((side, side), bool)  # True = open
    cells_per_axis = (side - 1) // 2
    visited = np.zeros((cells_per_axis, cells_per_axis), bool)
    start = (int(rng.integers(cells_per_axis)), int(rng.integers(cells_per_axis)))
    stack = [start]
    visited[start] = True
    grid[2 * start[0] + 1, 2 * start[1] + 1] = True
    while stack:
        r, c = stack[-1]
        options = [
            (r + dr, c + dc)
            for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))
            if 0 <= r + dr < cells_per_axis and 0 <= c + dc < cells_per_axis and not visited[r + dr, c + dc]
        ]
        if not options:
            stack.pop()
            continue
        nr, nc = options[int(rng.integers(len(options)))]
        visited[nr, nc] = True
        grid[r + nr + 1, c + nc + 1] = True  # the wall between the two cells
        grid[2 * nr + 1, 2 * nc + 1] = True
        stack.append((nr, nc))
    lattice_end = 2 * cells_per_axis - 1
    walls = np.argwhere(~grid[1 : lattice_end + 1, 1 : lattice_end + 1]) + 1
    between = walls[(walls[:, 0] + walls[:, 1]) % 2 == 1]  # walls separating two lattice cells
    if len(between) and loop_fraction > 0:
        knock = rng.choice(len(between), int(round(loop_fraction * len(between))), replace=False)
        grid[between[knock, 0], between[knock, 1]] = True
    return grid


def generate_maze(
    rng: np.random.Generator, side: int, min_path_len: int, loop_fraction: float = 0.03, max_tries: int = 200
):
    """One maze (question, answer as characters `[side, side]`, path length) with a unique shortest path of more than
    `min_path_len` path cells, or None after `max_tries` mazes without such a start/goal pair."""
    neighbours = _neighbours(side)
    for _ in range(max_tries):
        grid = _carve(rng, side, loop_fraction).reshape(-1)
        open_idx = np.flatnonzero(grid)
        anchor = int(open_idx[rng.integers(len(open_idx))])
        dist, _ = shortest_paths(grid, anchor, neighbours)
        far = np.flatnonzero(dist >= np.quantile(dist[dist >= 0], 0.9))  # start far out, so long paths exist
        start = int(far[rng.integers(len(far))])
        dist, count = shortest_paths(grid, start, neighbours)
        goals = np.flatnonzero((dist - 1 > min_path_len) & (count == 1))
        if len(goals) == 0:
            continue
        goal = int(goals[rng.integers(len(goals))])
        question = np.where(grid, OPEN, WALL).astype(np.uint8)
        question[start], question[goal] = START, GOAL
        answer = question.copy()
        cell = goal
        while dist[cell] > 1:
            cell = next(nb for nb in neighbours[cell] if dist[nb] == dist[cell] - 1)
            answer[cell] = PATH
        return question.reshape(side, side), answer.reshape(side, side), int(dist[goal] - 1)
    return None


def generate_mazes(
    n: int,
    size: int = 30,
    min_path_len: int = 110,
    seed: int = 0,
    progress: bool = False,
    exclude: set[bytes] | None = None,
) -> Mazes:
    """`n` distinct mazes of `size` x `size` whose start-to-goal shortest path is unique and has more than
    `min_path_len` cells; mazes whose question is in `exclude` (e.g. the train split's) are skipped."""
    if size < 5:
        raise DatasetError(f"--size must be at least 5, got {size}")
    rng = np.random.Generator(np.random.Philox(seed=seed))
    seen = set(exclude or ())
    questions, answers, ratings = [], [], []
    repeats = 0
    with progress_bar(total=n, desc=f"generating {size}x{size} mazes", unit="maze", disable=not progress) as bar:
        while len(questions) < n:
            made = generate_maze(rng, size, min_path_len)
            if made is None:
                raise DatasetError(
                    f"found no {size}x{size} maze with a unique shortest path longer than {min_path_len} cells; lower --min-difficulty or raise --size"
                )
            key = made[0].tobytes()
            if key in seen:
                repeats += 1
                if repeats > 100 + n:
                    raise DatasetError(
                        f"too few distinct {size}x{size} mazes for {n} more; raise --size or ask for fewer"
                    )
                continue
            seen.add(key)
            questions.append(made[0])
            answers.append(made[1])
            ratings.append(made[2])
            bar.update(1)
    shape = (0, size, size)
    return Mazes(
        np.stack(questions) if questions else np.zeros(shape, np.uint8),
        np.stack(answers) if answers else np.zeros(shape, np.uint8),
        np.asarray(ratings, np.int64),
    )


def default_min_path_len(size: int) -> int:
    """Maze-Hard's threshold (more than 110 path cells at 30x30), scaled by the maze's area."""
    return int(110 * size * size / 900)


def build_split_arrays(mazes: Mazes, augment: bool) -> dict[str, np.ndarray]:
    """Each maze is a group; with `augment` its 8 dihedral copies are the group's puzzles (one example each)."""
    copies = NUM_DIHEDRAL if augment else 1
    questions = np.stack([dihedral_transform(mazes.questions, t) for t in range(copies)], axis=1)
    answers = np.stack([dihedral_transform(mazes.answers, t) for t in range(copies)], axis=1)
    total = len(mazes) * copies
    seq_len = mazes.questions.shape[1] * mazes.questions.shape[2]
    return {
        "inputs": to_tokens(questions.reshape(total, seq_len)),
        "labels": to_tokens(answers.reshape(total, seq_len)),
        "puzzle_identifiers": np.zeros(total, np.int32),
        "puzzle_indices": np.arange(total + 1, dtype=np.int32),
        "group_indices": np.arange(0, total + 1, copies, dtype=np.int32),
    }


def load_sources(args: argparse.Namespace) -> dict[str, Mazes]:
    if args.generate is not None:
        if args.generate < 1:
            raise DatasetError(f"--generate needs a positive number of mazes, got {args.generate}")
        min_len = args.min_difficulty if args.min_difficulty is not None else default_min_path_len(args.size)
        num_test = args.test_size if args.test_size is not None else args.generate
        train = generate_mazes(args.generate, args.size, min_len, args.seed, progress=True)
        # no test maze is a train maze or one of its dihedral copies
        exclude = {
            np.ascontiguousarray(dihedral_transform(q, t)).tobytes()
            for q in train.questions
            for t in range(NUM_DIHEDRAL)
        }
        return {
            "train": train,
            "test": generate_mazes(num_test, args.size, min_len, args.seed + 1_000_003, progress=True, exclude=exclude),
        }
    if args.source_csv is not None:
        found = csv_sources(args.source_csv)
        if "file" in found:
            rows = read_four_column_csv(found["file"], None, b"# SG", CHARSET.encode(), "maze")
            return {
                split: from_csv_rows(part)
                for split, part in split_single_file(rows, args.seed, args.test_fraction).items()
            }
        sources = {split: read_maze_csv(path) for split, path in found.items()}
    else:
        sources = {
            split: read_maze_csv(hub_download(args.source_repo, f"{split}.csv", OFFLINE_HINT))
            for split in ("train", "test")
        }
    sides = {split: m.questions.shape[1] for split, m in sources.items()}
    if len(set(sides.values())) != 1:
        raise DatasetError(f"train and test mazes differ in size ({sides}); both splits need the same grid size")
    return sources


def build(args: argparse.Namespace) -> BuildSummary:
    check_counts(args)
    check_output_dir(args.output_dir, [args.source_csv] if args.source_csv else [])
    summary = BuildSummary("Maze", Path(args.output_dir), difficulty_label="path length")
    sources = load_sources(args)
    rng = np.random.Generator(np.random.Philox(seed=args.seed))
    with staged_directory(Path(args.output_dir)) as stage:
        for split in ("train", "test"):
            mazes = sources[split]
            if args.min_difficulty is not None and args.generate is None:
                mazes = mazes.select(mazes.ratings >= args.min_difficulty)
            if split == "train" and args.subsample_size is not None and args.subsample_size < len(mazes):
                mazes = mazes.select(np.sort(rng.choice(len(mazes), args.subsample_size, replace=False)))
            if len(mazes) == 0:
                raise DatasetError(f"no {split} mazes left (check --min-difficulty / --subsample-size)")
            arrays = build_split_arrays(mazes, args.aug and split == "train")
            write_split(stage, split, arrays, VOCAB_SIZE, summary, mazes.ratings)
        write_identifiers(stage, [BLANK_IDENTIFIER_NAME])
    return summary


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Build a Maze-Hard dataset (from the hub, a CSV, or generated offline).")
    p.add_argument("--output-dir", default="data/maze-30x30-hard-1k")
    add_source_arguments(p, "mazes", DEFAULT_REPO, default_test_size="N")
    p.add_argument("--size", type=int, default=30, help="side of generated mazes (5 or more)")
    p.add_argument(
        "--min-difficulty",
        type=int,
        default=None,
        help="generated: the path must have more than this many cells (default 110 at 30x30, scaled by area); "
        "CSV: keep rows with rating >= this",
    )
    p.add_argument(
        "--aug",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add the 8 dihedral copies of every training maze",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    print(build(args).render())
