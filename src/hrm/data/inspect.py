"""Print a dataset's metadata and draw a few examples as text, to check a built set by eye.

    python -m hrm.data.inspect data/sudoku-extreme-1k-aug-1000 --split test -n 3
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from hrm.data.common import OneLineParser
from hrm.data.format import PuzzleSet, directory_size, format_bytes, read_identifiers, read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError, HRMError, error_line

SUDOKU_SYMBOLS = " .123456789"  # token -> character (pad, blank, digits)
MAZE_SYMBOLS = "?# SGo"
ARC_SYMBOLS = " |0123456789"  # pad, end-of-grid, colours


def detect_kind(metadata: PuzzleDatasetMetadata) -> str:
    if metadata.seq_len == 81 and metadata.vocab_size == 11:
        return "sudoku"
    if metadata.vocab_size == 6:
        return "maze"
    if metadata.seq_len == 900 and metadata.vocab_size == 12:
        return "arc"
    return "tokens"


def draw_sudoku(tokens: np.ndarray) -> list[str]:
    cells = [SUDOKU_SYMBOLS[t] if 0 <= t < len(SUDOKU_SYMBOLS) else "?" for t in np.asarray(tokens).tolist()]
    lines = []
    for row in range(9):
        if row in (3, 6):
            lines.append("------+-------+------")
        chunks = [" ".join(cells[row * 9 + c: row * 9 + c + 3]) for c in (0, 3, 6)]
        lines.append(" | ".join(chunks))
    return lines


def _draw_square(tokens: np.ndarray, symbols: str) -> list[str]:
    tokens = np.asarray(tokens)
    side = int(round(tokens.shape[0] ** 0.5))
    if side * side != tokens.shape[0]:
        return [" ".join(str(t) for t in tokens.tolist())]
    chars = [symbols[t] if 0 <= t < len(symbols) else "?" for t in tokens.tolist()]
    return ["".join(chars[r * side: (r + 1) * side]) for r in range(side)]


def draw_arc(tokens: np.ndarray) -> list[str]:
    """The used part of the 30x30 canvas (rows/columns up to the last non-pad token)."""
    canvas = np.asarray(tokens).reshape(30, 30)
    used = np.argwhere(canvas != 0)
    if used.size == 0:
        return ["(empty)"]
    bottom, right = used.max(axis=0) + 1
    return ["".join(ARC_SYMBOLS[t] if t < len(ARC_SYMBOLS) else "?" for t in row[:right]) for row in canvas[:bottom].tolist()]


def draw(kind: str, tokens: np.ndarray) -> list[str]:
    if kind == "sudoku":
        return draw_sudoku(tokens)
    if kind == "maze":
        return _draw_square(tokens, MAZE_SYMBOLS)
    if kind == "arc":
        return draw_arc(tokens)
    return _draw_square(tokens, "0123456789abcdefghijklmnopqrstuvwxyz")


def side_by_side(left: list[str], right: list[str], gap: str = "    ") -> list[str]:
    width = max((len(line) for line in left), default=0)
    rows = max(len(left), len(right))
    left = left + [""] * (rows - len(left))
    right = right + [""] * (rows - len(right))
    return [f"{a:<{width}s}{gap}{b}" for a, b in zip(left, right)]


def describe(dataset_dir: str | Path, split: str, num_examples: int, seed: int | None = None) -> str:
    metadata, sets = read_split(dataset_dir, split)
    kind = detect_kind(metadata)
    try:
        names = read_identifiers(dataset_dir)
    except HRMError:
        names = []
    lines = [f"{dataset_dir} [{split}]  kind: {kind}  size on disk: {format_bytes(directory_size(Path(dataset_dir) / split))}"]
    lines += [f"  {key}: {value}" for key, value in metadata.model_dump().items()]
    for set_name, puzzle_set in sets.items():
        lines.append(
            f"  set {set_name!r}: {puzzle_set.num_examples:,} examples, {puzzle_set.num_puzzles:,} puzzles, {puzzle_set.num_groups:,} groups, "
            f"tokens {puzzle_set.inputs.dtype}"
        )
        lines.extend(_examples(kind, puzzle_set, names, num_examples, seed))
    return "\n".join(lines)


def _examples(kind: str, puzzle_set: PuzzleSet, names: list[str], count: int, seed: int | None) -> list[str]:
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
        for line in side_by_side(draw(kind, puzzle_set.inputs[example]), draw(kind, puzzle_set.labels[example])):
            lines.append("    " + line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description="Show a puzzle dataset's metadata and draw a few examples.")
    parser.add_argument("dataset_dir")
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("-n", "--num-examples", type=int, default=3)
    parser.add_argument("--seed", type=int, default=None, help="draw random examples with this seed (default: the first ones)")
    args = parser.parse_args(argv)
    try:
        if args.num_examples < 0:
            raise DatasetError(f"--num-examples must be 0 or more, got {args.num_examples}")
        print(describe(args.dataset_dir, args.split, args.num_examples, args.seed))
    except (HRMError, OSError) as err:
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
