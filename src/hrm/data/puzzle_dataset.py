"""`PuzzleDataset`: the training sampler and test iterator, on the original's random stream.

Training goes in chunks of `epochs_per_iter` epochs and draws exactly the original's random stream: the
`iters`-th set visit (counted from 1 over chunks and sets, `chunk * num_sets + set + 1`) seeds
`Philox(seed + iters)`, which first shuffles the groups of every epoch of the chunk and then picks one
puzzle per group in batch order. Which examples of a multi-example puzzle go into a batch comes from a
second, separately seeded generator (the original takes them from NumPy's unseeded global generator), so
the group and puzzle order stay the original's. Any chunk (and any batch inside it) can be regenerated
exactly for a resumed run (`iter_chunk`). Inputs and labels stay memory-mapped; each batch gathers only its
rows, and the sampler holds one epoch of group order at a time.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from pydantic import BaseModel

from hrm.data.combined import read_splits
from hrm.data.format import IGNORE_LABEL, PuzzleSet
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.errors import DatasetError

logger = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]


class PuzzleDatasetConfig(BaseModel):
    seed: int
    dataset_path: str
    dataset_paths: list[str] = []  # several datasets as one (TRM's data_paths); empty: [dataset_path]
    identifier_paths: list[str] | None = None  # the datasets whose identifier table the ids index (read_splits)
    global_batch_size: int
    test_set_mode: bool
    epochs_per_iter: int
    rank: int
    num_replicas: int


EXAMPLE_STREAM = 1  # tells the example generator's seed apart from the chunk generator's


def set_visit_number(chunk_index: int, set_index: int, num_sets: int) -> int:
    """The original's `iters` counter for one set of one chunk: incremented before use, once per set per chunk."""
    return chunk_index * num_sets + set_index + 1


def chunk_generator(seed: int, iters: int) -> np.random.Generator:
    """The original's generator for set visit `iters`: group order, then one puzzle per group."""
    return np.random.Generator(np.random.Philox(seed=seed + iters))


def example_generator(seed: int, iters: int) -> np.random.Generator:
    """The generator of example choices inside multi-example puzzles (ours; the original's is unseeded)."""
    return np.random.Generator(np.random.Philox(seed=np.random.SeedSequence([seed, iters, EXAMPLE_STREAM])))


def _copy_generator(rng: np.random.Generator) -> np.random.Generator:
    copy = np.random.Generator(type(rng.bit_generator)())
    copy.bit_generator.state = rng.bit_generator.state
    return copy


def sample_chunk_batches(
    rng: np.random.Generator,
    puzzle_indices: np.ndarray,
    group_indices: np.ndarray,
    num_epochs: int,
    global_batch_size: int,
    example_rng: np.random.Generator,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield `(example_ids, puzzle_ids)` of each full global batch of one chunk of one set.

    `rng` is consumed as the original consumes it: `num_epochs` calls of `permutation(num_groups)` (the
    concatenated group order), and only then one `integers(first, end)` per visited group (its puzzle).
    Each visited group's puzzle contributes distinct examples (as many as still fit in the batch, chosen with
    `example_rng`); the incomplete last batch is dropped. To hold one epoch of order at a time, one pass
    runs the permutations to find the generator state after them, and a copy of the starting state replays
    them epoch by epoch beside the puzzle draws (vectorised `integers` over an array of bounds draws the
    same numbers as the original's scalar calls, in the same order).
    """
    puzzle_indices = np.asarray(puzzle_indices, dtype=np.int64)
    group_indices = np.asarray(group_indices, dtype=np.int64)
    num_groups = group_indices.shape[0] - 1
    if num_groups == 0:
        return
    order_rng = _copy_generator(rng)
    for _ in range(num_epochs):
        rng.permutation(num_groups)
    pending_puzzles = np.zeros(0, np.int64)  # groups of earlier epochs not yet in a batch
    for _ in range(num_epochs):
        order = order_rng.permutation(num_groups)
        puzzles = np.concatenate([pending_puzzles, rng.integers(group_indices[order], group_indices[order + 1])])
        sizes = puzzle_indices[puzzles + 1] - puzzle_indices[puzzles]
        ends = np.cumsum(sizes)
        start, consumed = 0, 0  # consumed: examples offered by the steps before `start`
        while True:
            stop = int(np.searchsorted(ends, consumed + global_batch_size, side="left")) + 1
            if stop > puzzles.shape[0]:
                break  # not enough left in this epoch: carry over to the next one (or drop at the end)
            chosen, chosen_sizes = puzzles[start:stop], sizes[start:stop]
            take = chosen_sizes.copy()
            take[-1] -= int(ends[stop - 1] - consumed - global_batch_size)
            example_ids = np.repeat(puzzle_indices[chosen], take)
            multi = chosen_sizes > 1
            if multi.any():
                example_ids[np.repeat(multi, take)] += _random_subsets(example_rng, chosen_sizes[multi], take[multi])
            yield example_ids, np.repeat(chosen, take)
            consumed = int(ends[stop - 1])
            start = stop
        pending_puzzles = puzzles[start:]


def _random_subsets(rng: np.random.Generator, sizes: np.ndarray, take: np.ndarray) -> np.ndarray:
    """For each puzzle in turn, `take` distinct offsets in `0..size-1` in random order (vectorised)."""
    owner = np.repeat(np.arange(sizes.shape[0]), sizes)
    first = np.repeat(np.cumsum(sizes) - sizes, sizes)
    order = np.lexsort((rng.random(owner.shape[0]), owner))  # each puzzle's examples, shuffled, puzzle by puzzle
    rank_in_puzzle = np.arange(owner.shape[0]) - first
    return (order - first)[rank_in_puzzle < np.repeat(take, sizes)]


class PuzzleDataset(torch.utils.data.IterableDataset):
    """Batches of one split, as `(set_name, batch, global_effective_batch_size)`; see the module docstring."""

    def __init__(self, config: PuzzleDatasetConfig, split: str = "train"):
        super().__init__()
        self.config = config
        self.split = split
        self.paths = list(config.dataset_paths) or [config.dataset_path]
        self.metadata: PuzzleDatasetMetadata = (
            PuzzleDatasetMetadata.load(Path(self.paths[0]) / split)
            if len(self.paths) == 1 and config.identifier_paths is None
            else read_splits(self.paths, split, identifier_paths=config.identifier_paths)[0]
        )
        if config.num_replicas < 1 or not 0 <= config.rank < config.num_replicas:
            raise DatasetError(f"rank {config.rank} is outside 0..num_replicas-1 (num_replicas={config.num_replicas})")
        if config.global_batch_size < 1 or config.global_batch_size % config.num_replicas != 0:
            raise DatasetError(
                f"global_batch_size {config.global_batch_size} must be a positive multiple of the number of processes ({config.num_replicas})"
            )
        if config.epochs_per_iter < 1:
            raise DatasetError(f"epochs_per_iter must be at least 1, got {config.epochs_per_iter}")
        self.local_batch_size = config.global_batch_size // config.num_replicas
        self._sets: dict[str, PuzzleSet] | None = None
        self._chunk_counter = 0

    @property
    def sets(self) -> dict[str, PuzzleSet]:
        """The arrays, opened (memory-mapped) on first use so worker processes open their own maps."""
        if self._sets is None:
            _, self._sets = read_splits(self.paths, self.split, identifier_paths=self.config.identifier_paths)
        return self._sets

    def __iter__(self) -> Iterator[tuple[str, Batch, int]]:
        if self.config.test_set_mode:
            yield from self.iter_test()
        else:
            chunk_index = self._chunk_counter
            self._chunk_counter += 1
            yield from self.iter_chunk(chunk_index)

    def _local_slice(self, batch_len: int) -> slice:
        start = self.config.rank * self.local_batch_size
        return slice(start, min(start + self.local_batch_size, batch_len))

    def _make_batch(self, puzzle_set: PuzzleSet, example_ids: np.ndarray, puzzle_ids: np.ndarray) -> Batch:
        """Gather rows (local slice only), pad to the local batch size, map ignored labels to -100."""
        count = example_ids.shape[0]
        pad = self.local_batch_size - count
        inputs = np.asarray(puzzle_set.inputs[example_ids], dtype=np.int32)
        labels = np.asarray(puzzle_set.labels[example_ids], dtype=np.int32)
        identifiers = np.asarray(puzzle_set.puzzle_identifiers[puzzle_ids], dtype=np.int32)
        if self.metadata.ignore_label_id is not None:
            labels[labels == self.metadata.ignore_label_id] = IGNORE_LABEL
        if pad > 0:
            seq_len = self.metadata.seq_len
            inputs = np.concatenate([inputs, np.full((pad, seq_len), self.metadata.pad_id, np.int32)])
            labels = np.concatenate([labels, np.full((pad, seq_len), IGNORE_LABEL, np.int32)])
            identifiers = np.concatenate([identifiers, np.full(pad, self.metadata.blank_identifier_id, np.int32)])
        return {
            "inputs": torch.from_numpy(inputs),
            "labels": torch.from_numpy(labels),
            "puzzle_identifiers": torch.from_numpy(identifiers),
        }

    def iter_chunk(
        self, chunk_index: int, skip_batches: int = 0, part: int = 0, num_parts: int = 1
    ) -> Iterator[tuple[str, Batch, int]]:
        """The training batches of chunk `chunk_index` (deterministic), after skipping `skip_batches` of them.

        With `num_parts > 1` only batches `part`, `part + num_parts`, ... (counted after the skip) are read: the
        sampler still draws every batch, so the stream stays the same, but only this part's rows are gathered.
        """
        batch_number = 0
        num_sets = len(self.sets)
        for set_index, (set_name, puzzle_set) in enumerate(self.sets.items()):
            iters = set_visit_number(chunk_index, set_index, num_sets)
            for example_ids, puzzle_ids in sample_chunk_batches(
                chunk_generator(self.config.seed, iters),
                puzzle_set.puzzle_indices,
                puzzle_set.group_indices,
                self.config.epochs_per_iter,
                self.config.global_batch_size,
                example_generator(self.config.seed, iters),
            ):
                batch_number += 1
                if batch_number <= skip_batches or (batch_number - skip_batches - 1) % num_parts != part:
                    continue
                local = self._local_slice(example_ids.shape[0])
                yield (
                    set_name,
                    self._make_batch(puzzle_set, example_ids[local], puzzle_ids[local]),
                    int(example_ids.shape[0]),
                )

    def iter_test(self) -> Iterator[tuple[str, Batch, int]]:
        """Every example once, in order, set by set; the last batch of a set is padded."""
        batch_size = self.config.global_batch_size
        for set_name, puzzle_set in self.sets.items():
            example_puzzles = puzzle_set.example_puzzle_ids()
            for start in range(0, puzzle_set.num_examples, batch_size):
                end = min(start + batch_size, puzzle_set.num_examples)
                local = self._local_slice(end - start)
                ids = np.arange(start, end)[local] if local.start < end - start else np.zeros(0, np.int64)
                yield set_name, self._make_batch(puzzle_set, ids, example_puzzles[ids]), end - start
