"""The training sampler draws the original's random stream, on any group structure.

The reference here is the original's walk written plainly: one generator per set visit, `iters` counted from 1
over chunks and sets; all permutations of the chunk first; then one scalar `integers` per group, in batch order.
"""

from __future__ import annotations

import numpy as np
import pytest

from hrm.data.format import write_dataset
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.data.puzzle_dataset import PuzzleDataset, PuzzleDatasetConfig


def write_sets(path, sets: dict[str, list[list[int]]]) -> None:
    """A train split with one set per entry (groups of puzzles of the given example counts); each example's
    input is its own index within the set, each puzzle's identifier its index + 1."""
    arrays, total_groups, examples, puzzles = {}, 0, 0, 0
    for name, groups in sets.items():
        sizes = [size for group in groups for size in group]
        num_examples = sum(sizes)
        arrays[name] = {
            "inputs": np.repeat(np.arange(num_examples, dtype=np.int32)[:, None], 2, axis=1),
            "labels": np.zeros((num_examples, 2), np.int32),
            "puzzle_identifiers": np.arange(1, len(sizes) + 1, dtype=np.int32),
            "puzzle_indices": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32),
            "group_indices": np.concatenate([[0], np.cumsum([len(group) for group in groups])]).astype(np.int32),
        }
        total_groups += len(groups)
        examples += num_examples
        puzzles += len(sizes)
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=None,
        blank_identifier_id=0,
        vocab_size=1000,
        seq_len=2,
        num_puzzle_identifiers=1000,
        total_groups=total_groups,
        mean_puzzle_examples=examples / puzzles,
        sets=list(sets),
    )
    write_dataset(path, "train", arrays, meta)


def reference_walk(seed, sets, epochs, batch_size, num_chunks):
    """(chunk, set name, [(puzzle, rows taken)] per visited group) of every full batch, drawn as the original draws."""
    iters = 0
    for chunk in range(num_chunks):
        for name, groups in sets.items():
            iters += 1
            rng = np.random.Generator(np.random.Philox(seed=seed + iters))
            group_first = np.concatenate([[0], np.cumsum([len(group) for group in groups])])
            sizes = [size for group in groups for size in group]
            order = np.concatenate([rng.permutation(len(groups)) for _ in range(epochs)])
            position = 0
            while position < order.size:
                visits: list[tuple[int, int]] = []
                filled = 0
                while position < order.size and filled < batch_size:
                    group = order[position]
                    puzzle = int(rng.integers(group_first[group], group_first[group + 1]))
                    position += 1
                    visits.append((puzzle, min(sizes[puzzle], batch_size - filled)))
                    filled += visits[-1][1]
                if filled < batch_size:
                    break
                yield chunk, name, visits


@pytest.mark.parametrize(
    "seed, batch_size, epochs, shape_seed", [(0, 4, 3, 0), (7, 5, 2, 1), (123, 16, 4, 2), (5, 3, 1, 3)]
)
def test_batches_follow_the_originals_stream_over_sets_and_chunks(tmp_path, seed, batch_size, epochs, shape_seed):
    rng = np.random.default_rng(shape_seed)
    sets = {
        name: [list(rng.integers(1, 5, size=rng.integers(1, 4))) for _ in range(rng.integers(5, 12))]
        for name in ("first", "second")
    }
    write_sets(tmp_path, sets)
    expected = list(reference_walk(seed, sets, epochs, batch_size, num_chunks=3))
    dataset = PuzzleDataset(
        PuzzleDatasetConfig(
            seed=seed,
            dataset_path=str(tmp_path),
            global_batch_size=batch_size,
            test_set_mode=False,
            epochs_per_iter=epochs,
            rank=0,
            num_replicas=1,
        )
    )
    ours = [
        (chunk, name, batch, effective) for chunk in range(3) for name, batch, effective in dataset.iter_chunk(chunk)
    ]
    assert len(ours) == len(expected) > 0
    offsets = {
        name: np.concatenate([[0], np.cumsum([s for group in groups for s in group])]) for name, groups in sets.items()
    }
    for (chunk, name, batch, effective), (want_chunk, want_name, visits) in zip(ours, expected):
        assert (chunk, name, effective) == (want_chunk, want_name, batch_size)
        puzzles = batch["puzzle_identifiers"].numpy() - 1
        assert puzzles.tolist() == [puzzle for puzzle, taken in visits for _ in range(taken)]
        # Each row is an example of its puzzle, and the rows of one visit are distinct examples.
        examples = batch["inputs"][:, 0].numpy()
        assert np.all((offsets[name][puzzles] <= examples) & (examples < offsets[name][puzzles + 1]))
        for rows in np.split(examples, np.cumsum([taken for _, taken in visits])[:-1]):
            assert len(np.unique(rows)) == len(rows)


def test_example_choice_is_seeded_and_resumes_exactly(tmp_path):
    write_sets(tmp_path, {"all": [[5, 3], [4], [2, 6], [3, 3, 3]] * 3})

    def run(seed, skip=0):
        dataset = PuzzleDataset(
            PuzzleDatasetConfig(
                seed=seed,
                dataset_path=str(tmp_path),
                global_batch_size=4,
                test_set_mode=False,
                epochs_per_iter=3,
                rank=0,
                num_replicas=1,
            )
        )
        return [batch["inputs"][:, 0].tolist() for _, batch, _ in dataset.iter_chunk(1, skip)]

    assert run(3) == run(3)
    assert run(3, skip=5) == run(3)[5:]
    assert run(3) != run(4)
