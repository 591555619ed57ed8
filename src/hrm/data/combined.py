"""Several datasets trained (or evaluated) as one: TRM's `data_paths`.

The datasets must agree on everything a batch shares (seq_len, vocabulary, pad / ignore / blank ids, set
names). Their identifier tables are stacked: dataset i's puzzle identifiers are shifted by the identifier
counts of datasets 0..i-1, so every puzzle keeps its own embedding row (TRM's code does not shift them, so
its later datasets reuse the rows of the earlier ones). Counts of identifiers and groups add up, and the
mean examples per puzzle is weighted by each dataset's puzzle count. With several datasets, set `S` of
dataset i is called `S<i>` (e.g. `all0`, `all1`); with one, names are unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hrm.data.format import PuzzleSet, read_identifiers, read_split
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError

SHARED_FIELDS = ("seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id", "sets")


def identifier_offsets(metas: Sequence[PuzzleDatasetMetadata]) -> list[int]:
    """Where each dataset's identifiers start in the stacked table."""
    return [int(sum(meta.num_puzzle_identifiers for meta in metas[:i])) for i in range(len(metas))]


def combine_metadata(paths: Sequence[str | Path], metas: Sequence[PuzzleDatasetMetadata]) -> PuzzleDatasetMetadata:
    """The metadata of datasets used as one: shared fields checked, identifier and group counts added. The mean
    examples per puzzle and the set names stay the first dataset's (`read_splits` sets both from what it reads)."""
    for path, meta in zip(paths[1:], metas[1:]):
        for key in SHARED_FIELDS:
            if getattr(meta, key) != getattr(metas[0], key):
                raise DatasetError(
                    f"data_paths: {path} has {key}={getattr(meta, key)!r} but {paths[0]} has "
                    f"{getattr(metas[0], key)!r}; datasets trained together must agree on {', '.join(SHARED_FIELDS)}"
                )
    return metas[0].model_copy(
        update={
            "num_puzzle_identifiers": sum(meta.num_puzzle_identifiers for meta in metas),
            "total_groups": sum(meta.total_groups for meta in metas),
            "total_puzzles": None
            if any(meta.total_puzzles is None for meta in metas)
            else sum(meta.total_puzzles for meta in metas),
        }
    )


def identifier_paths_for(test_paths: Sequence[str | Path], train_paths: Sequence[str | Path]) -> list[str] | None:
    """`train_paths` when the evaluation datasets are some of the training ones (TRM's `data_paths_test=[a]` beside
    `data_paths=[a,b]`): their identifiers then index the training's stacked table. None otherwise."""
    train = [str(Path(path).resolve()) for path in train_paths]
    test = [str(Path(path).resolve()) for path in test_paths]
    if test == train or not set(test) <= set(train):
        return None
    return [str(path) for path in train_paths]


def read_splits(
    paths: Sequence[str | Path],
    split: str,
    mmap: bool = True,
    identifier_paths: Sequence[str | Path] | None = None,
) -> tuple[PuzzleDatasetMetadata, dict[str, PuzzleSet]]:
    """One split of every dataset in `paths`, combined (one path: exactly `read_split`).

    `identifier_paths` (see `identifier_paths_for`): the datasets whose stacked identifier table the ids index;
    each of `paths` keeps the offset it has there, and the metadata counts that table's identifiers."""
    stacked = None
    if identifier_paths is not None and [str(p) for p in identifier_paths] != [str(p) for p in paths]:
        stacked = _stacked_offsets(paths, identifier_paths, split)
    if len(paths) == 1 and stacked is None:
        return read_split(paths[0], split, mmap=mmap)
    parts = [read_split(path, split, mmap=mmap) for path in paths]
    metas = [meta for meta, _ in parts]
    combined = combine_metadata(paths, metas)
    offsets = identifier_offsets(metas)
    if stacked is not None:
        offsets, total = stacked
        combined = combined.model_copy(update={"num_puzzle_identifiers": total})
    sets: dict[str, PuzzleSet] = {}
    puzzles = 0
    weighted_examples = 0.0
    for index, ((meta, dataset_sets), offset) in enumerate(zip(parts, offsets)):
        count = sum(puzzle_set.num_puzzles for puzzle_set in dataset_sets.values())
        puzzles += count
        weighted_examples += meta.mean_puzzle_examples * count
        for set_name, puzzle_set in dataset_sets.items():
            sets[f"{set_name}{index}" if len(parts) > 1 else set_name] = PuzzleSet(
                inputs=puzzle_set.inputs,
                labels=puzzle_set.labels,
                puzzle_identifiers=np.asarray(puzzle_set.puzzle_identifiers) + offset,
                puzzle_indices=puzzle_set.puzzle_indices,
                group_indices=puzzle_set.group_indices,
            )
    metadata = combined.model_copy(
        update={"mean_puzzle_examples": weighted_examples / max(puzzles, 1), "sets": list(sets)}
    )
    return metadata, sets


def _stacked_offsets(
    paths: Sequence[str | Path], identifier_paths: Sequence[str | Path], split: str
) -> tuple[list[int], int]:
    """Each of `paths`' identifier offset in the table stacked from `identifier_paths`, and that table's size."""
    metas = [PuzzleDatasetMetadata.load(Path(path) / split) for path in identifier_paths]
    starts = identifier_offsets(metas)
    resolved = [str(Path(path).resolve()) for path in identifier_paths]
    offsets = []
    for path in paths:
        key = str(Path(path).resolve())
        if key not in resolved:
            raise DatasetError(f"{path} is not one of the datasets {', '.join(map(str, identifier_paths))}")
        offsets.append(starts[resolved.index(key)])
    return offsets, int(sum(meta.num_puzzle_identifiers for meta in metas))


def read_combined_identifiers(paths: Sequence[str | Path]) -> list[str]:
    """The identifier names of the stacked table (each dataset's `identifiers.json`, in order)."""
    names: list[str] = []
    for path in paths:
        metadata = PuzzleDatasetMetadata.load(Path(path) / "train") if (Path(path) / "train").is_dir() else None
        own = read_identifiers(path)
        if metadata is not None and len(own) < metadata.num_puzzle_identifiers:
            own = own + [f"<unnamed {i}>" for i in range(len(own), metadata.num_puzzle_identifiers)]
        names += own
    return names
