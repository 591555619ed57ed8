"""The dataset checks a training run makes before it starts: every split exists, the splits agree on shapes, and
every token and puzzle identifier fits the metadata (a token outside the vocabulary would otherwise fail deep
inside the model's embedding, far from the file that holds it)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from hrm.data.combined import identifier_paths_for, read_splits
from hrm.data.format import IGNORE_LABEL, read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError

logger = logging.getLogger(__name__)

_CHECK_ELEMENTS = 1 << 24  # tokens per block when every row is checked against the vocabulary


def first_token_outside(
    array: np.ndarray, vocab_size: int, allowed: tuple[int, ...] = ()
) -> tuple[int, int, int] | None:
    """(row, position, token) of the first token of a 2-D (memory-mapped) array outside [0, vocab_size) and `allowed`.

    Every row is read, a block of rows at a time, so memory stays bounded on large memory-mapped arrays.
    """
    block = max(1, _CHECK_ELEMENTS // max(1, array.shape[1] if array.ndim == 2 else 1))
    for start in range(0, array.shape[0], block):
        rows = np.asarray(array[start : start + block])
        if rows.size == 0 or (rows.min() >= 0 and rows.max() < vocab_size):
            continue
        rows = rows.astype(np.int64)  # so that allowed values outside the dtype's range compare correctly
        bad = (rows < 0) | (rows >= vocab_size)
        for value in allowed:
            bad &= rows != value
        if bad.any():
            row, column = np.argwhere(bad.reshape(rows.shape[0], -1))[0]
            return start + int(row), int(column), int(rows.reshape(rows.shape[0], -1)[row, column])
    return None


_OVERLAP_SCAN_TOKENS = 1 << 27  # tokens of each split hashed for the overlap check (a bound on its cost)
_HASH_BLOCK = 1 << 22  # tokens hashed at a time (the 64-bit copy of a block stays small)


def row_hashes(array: np.ndarray, limit_tokens: int | None = None) -> np.ndarray:
    """A 64-bit hash per row of a 2-D token array (memory-mapped arrays are read a block of rows at a time)."""
    length = array.shape[1] if array.ndim == 2 else 1
    weights = np.random.Generator(np.random.Philox(seed=0x0E11)).integers(1, 2**63, size=length, dtype=np.uint64)
    rows = array.shape[0] if limit_tokens is None else min(array.shape[0], max(1, limit_tokens // max(1, length)))
    block = max(1, _HASH_BLOCK // max(1, length))
    parts = []
    with np.errstate(over="ignore"):
        for start in range(0, rows, block):
            tokens = np.asarray(array[start : min(rows, start + block)]).reshape(-1, length).astype(np.uint64)
            parts.append((tokens * weights).sum(axis=1, dtype=np.uint64))
    return np.concatenate(parts) if parts else np.zeros(0, np.uint64)


def warn_test_overlap(data_path: str, train_sets: dict, test_sets: dict) -> None:
    """Warn when test inputs also appear among the training inputs (evaluating them measures memorisation)."""
    test = np.concatenate(
        [row_hashes(s.inputs, _OVERLAP_SCAN_TOKENS) for s in test_sets.values()] or [np.zeros(0, np.uint64)]
    )
    if test.size == 0:
        return
    seen = np.zeros(test.size, bool)
    for puzzle_set in train_sets.values():
        seen |= np.isin(test, row_hashes(puzzle_set.inputs, _OVERLAP_SCAN_TOKENS))
    if seen.any():
        logger.warning(
            "warning: %d of the %d test inputs checked in %s also appear in its training split (the same inputs in both); "
            "their evaluation measures memorisation, not generalisation; rebuild the dataset with disjoint splits",
            int(seen.sum()),
            test.size,
            data_path,
        )


def check_dataset(data_path: str) -> tuple[PuzzleDatasetMetadata, PuzzleDatasetMetadata, int]:
    """Both splits exist, agree on shapes, and their tokens and identifiers fit the metadata; also the test examples' count."""
    if not Path(data_path).is_dir():
        problem = "is a file, not a dataset folder" if Path(data_path).exists() else "does not exist"
        raise DatasetError(f"data_path={data_path} {problem}; build the dataset first (see dataset/) or fix data_path")
    metas, counts, read = {}, {}, {}
    for split in ("train", "test"):
        if not (Path(data_path) / split / "dataset.json").is_file():
            raise DatasetError(f"{data_path} has no {split} split ({split}/dataset.json); rebuild the dataset")
        meta, sets = read_split(data_path, split)
        label_extra = tuple(value for value in (meta.ignore_label_id, IGNORE_LABEL) if value is not None)
        for set_name, puzzle_set in sets.items():
            for key, array, extra in (("inputs", puzzle_set.inputs, ()), ("labels", puzzle_set.labels, label_extra)):
                bad = first_token_outside(array, meta.vocab_size, extra)
                if bad is not None:
                    row, column, token = bad
                    raise DatasetError(
                        f"{data_path}/{split}/{set_name}__{key}.npy: row {row} position {column} holds token {token}, outside "
                        f"vocab_size={meta.vocab_size} in {split}/dataset.json; rebuild the dataset or fix vocab_size"
                    )
            ids = np.asarray(puzzle_set.puzzle_identifiers)
            if ids.size and (ids.max() >= meta.num_puzzle_identifiers or ids.min() < 0):
                bad_id = ids.max() if ids.max() >= meta.num_puzzle_identifiers else ids.min()
                raise DatasetError(
                    f"{data_path}/{split}/{set_name}: puzzle identifier {bad_id} outside 0..num_puzzle_identifiers-1 (num_puzzle_identifiers={meta.num_puzzle_identifiers})"
                )
        metas[split] = meta
        read[split] = sets
        counts[split] = sum(puzzle_set.num_examples for puzzle_set in sets.values())
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if getattr(metas["train"], key) != getattr(metas["test"], key):
            raise DatasetError(
                f"{data_path}: train and test splits disagree on {key} ({getattr(metas['train'], key)} vs {getattr(metas['test'], key)}); rebuild the dataset"
            )
    warn_test_overlap(data_path, read["train"], read["test"])
    return metas["train"], metas["test"], counts["test"]


def check_datasets(
    train_paths: list[str], test_paths: list[str]
) -> tuple[PuzzleDatasetMetadata, PuzzleDatasetMetadata, int]:
    """Every dataset checked alone, then the combined train (`data_paths`) and test (`data_paths_test`) metadata,
    and the number of test examples."""
    checked = {path: check_dataset(path) for path in dict.fromkeys([*train_paths, *test_paths])}
    test_examples = sum(checked[path][2] for path in test_paths)
    if len(train_paths) == 1 and test_paths == train_paths:
        train_meta, test_meta, _ = checked[train_paths[0]]
        return train_meta, test_meta, test_examples
    identifier_paths = identifier_paths_for(test_paths, train_paths)
    train_meta = read_splits(train_paths, "train")[0]
    test_meta = read_splits(test_paths, "test", identifier_paths=identifier_paths)[0]
    for key in ("vocab_size", "seq_len", "num_puzzle_identifiers"):
        if getattr(train_meta, key) != getattr(test_meta, key):
            raise DatasetError(
                f"data_paths and data_paths_test disagree on {key} ({getattr(train_meta, key)} vs "
                f"{getattr(test_meta, key)}); list the same datasets, or leave data_paths_test empty"
            )
    return train_meta, test_meta, test_examples
