"""Tiny datasets and configs for the training tests (seq_len 16, hidden 32, one layer per level).

A module of its own (not conftest.py), so that test modules can import it by a name no other test folder uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrm.data.format import write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.training.cli import compose_config, to_pretrain_config

SEQ_LEN = 16
VOCAB = 6

TINY_ARCH = [
    "arch.hidden_size=32",
    "arch.num_heads=2",
    "arch.expansion=2",
    "arch.H_layers=1",
    "arch.L_layers=1",
    "arch.H_cycles=1",
    "arch.L_cycles=2",
    "arch.halt_max_steps=3",
    "arch.puzzle_emb_ndim=32",
]


def make_dataset(
    path: Path,
    *,
    num_groups: int = 12,
    puzzles_per_group: int = 2,
    examples_per_puzzle: int = 2,
    num_test: int = 10,
    vocab: int = VOCAB,
    seq_len: int = SEQ_LEN,
    seed: int = 0,
) -> Path:
    """A random task in the on-disk format: label = input shifted by one token value (mod the vocabulary)."""
    rng = np.random.default_rng(seed)
    num_puzzles = num_groups * puzzles_per_group
    num_ids = num_puzzles + 1

    def split_arrays(num_examples: int, puzzle_sizes: np.ndarray, group_sizes: np.ndarray, ids: np.ndarray):
        inputs = rng.integers(1, vocab, size=(num_examples, seq_len))
        labels = (inputs % (vocab - 1)) + 1
        return {
            "all": {
                "inputs": inputs.astype(np.uint8),
                "labels": labels.astype(np.uint8),
                "puzzle_identifiers": ids.astype(np.int32),
                "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]).astype(np.int32),
                "group_indices": np.concatenate([[0], np.cumsum(group_sizes)]).astype(np.int32),
            }
        }

    train = split_arrays(
        num_puzzles * examples_per_puzzle,
        np.full(num_puzzles, examples_per_puzzle),
        np.full(num_groups, puzzles_per_group),
        np.arange(1, num_puzzles + 1),
    )
    test = split_arrays(
        num_test, np.ones(num_test, np.int64), np.ones(num_test, np.int64), rng.integers(1, num_ids, num_test)
    )
    for split, sets, groups, mean in (
        ("train", train, num_groups, float(examples_per_puzzle)),
        ("test", test, num_test, 1.0),
    ):
        meta = PuzzleDatasetMetadata(
            pad_id=0,
            ignore_label_id=0,
            blank_identifier_id=0,
            vocab_size=vocab,
            seq_len=seq_len,
            num_puzzle_identifiers=num_ids,
            total_groups=groups,
            mean_puzzle_examples=mean,
            sets=["all"],
        )
        write_dataset(path, split, sets, meta)
    write_identifiers(path, ["<blank>"] + [f"p{i}" for i in range(1, num_ids)])
    return path


def tiny_overrides(data_path: Path, checkpoint_path: Path, *extra: str) -> list[str]:
    return [
        f"data_path={data_path}",
        f"checkpoint_path={checkpoint_path}",
        "global_batch_size=8",
        "epochs=4",
        "eval_interval=2",
        "lr=1e-2",
        "puzzle_emb_lr=1e-2",
        "lr_warmup_steps=2",
        "wandb_mode=disabled",
        "device=cpu",
        "cpu_forward_dtype=float32",
        "project_name=tests",
        "run_name=tiny",
        *TINY_ARCH,
        *extra,
    ]


def tiny_config(data_path: Path, checkpoint_path: Path, *extra: str):
    return to_pretrain_config(compose_config(tiny_overrides(data_path, checkpoint_path, *extra)))
