"""Print a dataset's metadata and draw a few examples as text (as its task draws them), to check a built set by eye.

python -m hrm.data.inspect data/sudoku-extreme-1k-aug-1000 --split test -n 3
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hrm.commands import run_command
from hrm.data.common import OneLineParser
from hrm.data.format import PuzzleSet, directory_size, format_bytes, read_identifiers, read_split
from hrm.errors import DatasetError, HRMError
from hrm.tasks import Task, detect


def side_by_side(left: list[str], right: list[str], gap: str = "    ") -> list[str]:
    width = max((len(line) for line in left), default=0)
    rows = max(len(left), len(right))
    left = left + [""] * (rows - len(left))
    right = right + [""] * (rows - len(right))
    return [f"{a:<{width}s}{gap}{b}" for a, b in zip(left, right)]


def describe(dataset_dir: str | Path, split: str, num_examples: int, seed: int | None = None) -> str:
    metadata, sets = read_split(dataset_dir, split)
    task = detect(metadata)
    try:
        names = read_identifiers(dataset_dir)
    except HRMError:
        names = []
    lines = [
        f"{dataset_dir} [{split}]  kind: {task.name}  size on disk: {format_bytes(directory_size(Path(dataset_dir) / split))}"
    ]
    lines += [f"  {key}: {value}" for key, value in metadata.model_dump().items()]
    for set_name, puzzle_set in sets.items():
        lines.append(
            f"  set {set_name!r}: {puzzle_set.num_examples:,} examples, {puzzle_set.num_puzzles:,} puzzles, {puzzle_set.num_groups:,} groups, "
            f"tokens {puzzle_set.inputs.dtype}"
        )
        lines.extend(_examples(task, puzzle_set, names, num_examples, seed))
    return "\n".join(lines)


def _examples(task: Task, puzzle_set: PuzzleSet, names: list[str], count: int, seed: int | None) -> list[str]:
    count = min(count, puzzle_set.num_examples)
    if seed is None:
        chosen = np.arange(count)
    else:
        chosen = np.sort(np.random.default_rng(seed).choice(puzzle_set.num_examples, count, replace=False))
    owners = np.searchsorted(np.asarray(puzzle_set.puzzle_indices), chosen, side="right") - 1
    lines = []
    for example, puzzle in zip(chosen.tolist(), owners.tolist()):
        identifier = int(puzzle_set.puzzle_identifiers[puzzle])
        name = names[identifier] if 0 <= identifier < len(names) else "?"
        lines.append("")
        lines.append(f"  example {example} (puzzle {puzzle}, identifier {identifier} {name!r})   input | label")
        for line in side_by_side(task.text(puzzle_set.inputs[example]), task.text(puzzle_set.labels[example])):
            lines.append("    " + line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description="Show a puzzle dataset's metadata and draw a few examples.")
    parser.add_argument("dataset_dir")
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("-n", "--num-examples", type=int, default=3)
    parser.add_argument(
        "--seed", type=int, default=None, help="draw random examples with this seed (default: the first ones)"
    )
    args = parser.parse_args(argv)

    def show() -> None:
        if args.num_examples < 0:
            raise DatasetError(f"--num-examples must be 0 or more, got {args.num_examples}")
        print(describe(args.dataset_dir, args.split, args.num_examples, args.seed))

    return run_command(show, memory_settings="--num-examples")


if __name__ == "__main__":
    sys.exit(main())
