"""Shared helpers for the dataset tests: tiny datasets in the original's layout."""

import json
from pathlib import Path

import numpy as np
import pytest

METADATA_KEYS = dict(pad_id=0, ignore_label_id=0, blank_identifier_id=0, vocab_size=12, num_puzzle_identifiers=4)


def write_original_layout(
    root: Path, split: str, puzzle_sizes_per_group: list[list[int]], seq_len: int = 6, dtype=np.int64
) -> dict:
    """A split written the way the original builders write it (np.save of int64 tokens, int32 indices)."""
    split_dir = root / split
    split_dir.mkdir(parents=True, exist_ok=True)
    puzzle_indices, group_indices, identifiers = [0], [0], []
    for group in puzzle_sizes_per_group:
        for size in group:
            puzzle_indices.append(puzzle_indices[-1] + size)
            identifiers.append(1 + len(identifiers) % 3)
        group_indices.append(len(identifiers))
    num_examples = puzzle_indices[-1]
    # example e holds token (e % 10) + 2 at position 0 so tests can tell examples apart
    inputs = np.full((num_examples, seq_len), 1, dtype)
    inputs[:, 0] = np.arange(num_examples) % 10 + 2
    inputs[:, 1] = np.arange(num_examples) // 10 + 2
    labels = inputs.copy()
    labels[:, -1] = 0  # ignored label
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": np.array(identifiers, np.int32),
        "puzzle_indices": np.array(puzzle_indices, np.int32),
        "group_indices": np.array(group_indices, np.int32),
    }
    for key, value in arrays.items():
        np.save(split_dir / f"all__{key}.npy", value)
    meta = dict(
        METADATA_KEYS,
        seq_len=seq_len,
        total_groups=len(puzzle_sizes_per_group),
        mean_puzzle_examples=num_examples / len(identifiers),
        sets=["all"],
    )
    (split_dir / "dataset.json").write_text(json.dumps(meta))
    (root / "identifiers.json").write_text(json.dumps(["<blank>", "a", "b", "c"]))
    return arrays


def example_number(batch_inputs) -> np.ndarray:
    """Recover the example index encoded by `write_original_layout`."""
    x = np.asarray(batch_inputs)
    return (x[:, 1] - 2) * 10 + (x[:, 0] - 2)


@pytest.fixture
def original_layout(tmp_path):
    return tmp_path, write_original_layout
