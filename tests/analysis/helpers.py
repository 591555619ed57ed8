"""Tiny HRM models, Sudoku/maze datasets written in the on-disk format, and checkpoints for the analysis tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from hrm.checkpoint import save_model_checkpoint
from hrm.config import validate_config
from hrm.models.registry import build_model

TINY_ARCH = dict(
    hidden_size=32,
    num_heads=4,
    expansion=2,
    H_layers=1,
    L_layers=1,
    H_cycles=2,
    L_cycles=3,
    puzzle_emb_ndim=32,
    halt_max_steps=3,
    halt_exploration_prob=0.0,
    forward_dtype="float32",
    pos_encodings="rope",
)


def tiny_hrm(seq_len: int = 81, vocab_size: int = 11, num_ids: int = 1, **arch):
    cfg = validate_config({"arch": {**TINY_ARCH, **arch}, "global_batch_size": 8})
    model = build_model(cfg.arch, batch_size=8, seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=num_ids)
    with torch.no_grad():  # a Q-head that is not constant, so Q-values differ between segments
        model.model.inner.q_head.weight.normal_(std=0.5)
    return model.eval(), cfg


def solved_sudokus(count: int, seed: int = 0) -> np.ndarray:
    """Valid solved boards as tokens (digit + 1): a base pattern with random digit, row and column shuffles."""
    rng = np.random.default_rng(seed)
    base = np.array([[(3 * (r % 3) + r // 3 + c) % 9 for c in range(9)] for r in range(9)])
    boards = []
    for _ in range(count):
        digits = rng.permutation(9) + 1
        rows = np.concatenate([band * 3 + rng.permutation(3) for band in rng.permutation(3)])
        cols = np.concatenate([stack * 3 + rng.permutation(3) for stack in rng.permutation(3)])
        boards.append(digits[base[rows][:, cols]].reshape(-1) + 1)
    return np.stack(boards)


def sudoku_examples(count: int, blanks: int = 30, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = solved_sudokus(count, seed)
    inputs = labels.copy()
    for row in inputs:
        row[rng.choice(81, size=blanks, replace=False)] = 1
    return inputs, labels


def write_split(folder: Path, inputs: np.ndarray, labels: np.ndarray, vocab_size: int) -> None:
    """One split with one set `all`, one example per puzzle, in the original's on-disk format."""
    folder.mkdir(parents=True, exist_ok=True)
    n = inputs.shape[0]
    np.save(folder / "all__inputs.npy", inputs.astype(np.int64))
    np.save(folder / "all__labels.npy", labels.astype(np.int64))
    np.save(folder / "all__puzzle_identifiers.npy", np.zeros(n, dtype=np.int32))
    np.save(folder / "all__puzzle_indices.npy", np.arange(n + 1, dtype=np.int32))
    np.save(folder / "all__group_indices.npy", np.arange(n + 1, dtype=np.int32))
    meta = dict(
        pad_id=0,
        ignore_label_id=0,
        blank_identifier_id=0,
        vocab_size=vocab_size,
        seq_len=inputs.shape[1],
        num_puzzle_identifiers=1,
        total_groups=n,
        mean_puzzle_examples=1.0,
        sets=["all"],
    )
    (folder / "dataset.json").write_text(json.dumps(meta))


def sudoku_dataset(root: Path, count: int = 12) -> Path:
    inputs, labels = sudoku_examples(count)
    for split in ("train", "test"):
        write_split(root / split, inputs, labels, vocab_size=11)
    (root / "identifiers.json").write_text(json.dumps(["<blank>"]))
    return root


def maze_examples(count: int, side: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Open square rooms with walls around, start top-left, goal bottom-right, the L-shaped path as label."""
    rng = np.random.default_rng(seed)
    inputs, labels = [], []
    for _ in range(count):
        grid = np.full((side, side), 2)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = 1
        start, goal = (1, int(rng.integers(1, side - 1))), (side - 2, int(rng.integers(1, side - 1)))
        label = grid.copy()
        c0, c1 = sorted((start[1], goal[1]))
        label[1 : side - 1, start[1]] = 5
        label[side - 2, c0 : c1 + 1] = 5
        for g in (grid, label):
            g[start], g[goal] = 3, 4
        inputs.append(grid.reshape(-1))
        labels.append(label.reshape(-1))
    return np.stack(inputs), np.stack(labels)


def maze_dataset(root: Path, count: int = 8) -> Path:
    inputs, labels = maze_examples(count)
    for split in ("train", "test"):
        write_split(root / split, inputs, labels, vocab_size=6)
    (root / "identifiers.json").write_text(json.dumps(["<blank>"]))
    return root


def checkpoint(root: Path, data_path: Path, seq_len: int, vocab_size: int) -> Path:
    model, cfg = tiny_hrm(seq_len=seq_len, vocab_size=vocab_size)
    cfg = cfg.model_copy(update={"data_path": str(data_path)})
    return save_model_checkpoint(model, cfg, root / "run", step=5)


def mini_sudoku_dataset(root: Path, count: int = 8) -> Path:
    """The quick start's 6x6 Sudoku (2x3 boxes, vocabulary 8) from its own generator."""
    from hrm.data.mini_sudoku import generate_puzzles

    puzzles, solutions, _ = generate_puzzles(count, seed=0)
    for split in ("train", "test"):
        write_split(root / split, puzzles.astype(np.int64) + 1, solutions.astype(np.int64) + 1, vocab_size=8)
    (root / "identifiers.json").write_text(json.dumps(["<blank>"]))
    return root
