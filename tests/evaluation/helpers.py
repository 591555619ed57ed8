"""Tiny datasets and checkpoints for the evaluator's tests (CPU, float32, a few thousand weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hrm.checkpoint import save_model_checkpoint
from hrm.config import PretrainConfig
from hrm.data.format import write_dataset, write_identifiers
from hrm.data.metadata import PuzzleDatasetMetadata
from hrm.models.registry import build_model

TINY_ARCH = dict(
    hidden_size=32,
    num_heads=2,
    expansion=2.0,
    H_layers=1,
    L_layers=1,
    H_cycles=1,
    L_cycles=2,
    puzzle_emb_ndim=32,
    halt_max_steps=4,
    forward_dtype="float32",
    attn_backend="sdpa",
)


def write_tiny_dataset(
    root: Path,
    inputs: np.ndarray,
    labels: np.ndarray,
    vocab_size: int,
    *,
    num_identifiers: int = 1,
    identifiers: np.ndarray | None = None,
    names: list[str] | None = None,
    puzzle_sizes: list[int] | None = None,
    ignore_label_id: int | None = 0,
) -> Path:
    """A dataset whose train and test splits both hold `inputs`/`labels` (one example per puzzle by default)."""
    num_examples, seq_len = inputs.shape
    puzzle_sizes = puzzle_sizes or [1] * num_examples
    num_puzzles = len(puzzle_sizes)
    if identifiers is None:
        identifiers = (
            np.zeros(num_puzzles, dtype=np.int32)
            if num_identifiers == 1
            else (np.arange(num_puzzles) % (num_identifiers - 1) + 1)
        )
    arrays = {
        "inputs": inputs,
        "labels": labels,
        "puzzle_identifiers": identifiers,
        "puzzle_indices": np.concatenate([[0], np.cumsum(puzzle_sizes)]),
        "group_indices": np.arange(num_puzzles + 1),
    }
    meta = PuzzleDatasetMetadata(
        pad_id=0,
        ignore_label_id=ignore_label_id,
        blank_identifier_id=0,
        vocab_size=vocab_size,
        seq_len=seq_len,
        num_puzzle_identifiers=num_identifiers,
        total_groups=num_puzzles,
        mean_puzzle_examples=num_examples / num_puzzles,
        sets=["all"],
    )
    for split in ("train", "test"):
        write_dataset(root, split, {"all": arrays}, meta)
    write_identifiers(root, names or ["<blank>"] + [f"p{i}" for i in range(1, num_identifiers)])
    return root


def random_dataset(
    root: Path, num_examples: int = 24, seq_len: int = 12, vocab_size: int = 7, seed: int = 0, **kwargs
) -> Path:
    rng = np.random.default_rng(seed)
    inputs = rng.integers(1, vocab_size, size=(num_examples, seq_len)).astype(np.uint8)
    labels = rng.integers(1, vocab_size, size=(num_examples, seq_len)).astype(np.uint8)
    return write_tiny_dataset(root, inputs, labels, vocab_size, **kwargs)


def make_checkpoint(
    run_dir: Path,
    data_path: Path,
    *,
    step: int = 10,
    seed: int = 0,
    global_batch_size: int = 8,
    q_scale: float = 0.0,
    q_seed: int = 4,
    **arch,
) -> Path:
    """A random tiny HRM checkpoint for `data_path`. `q_scale` > 0 gives the Q-head random weights so
    some examples halt early under halt=act."""
    meta = PuzzleDatasetMetadata.load(Path(data_path) / "train")
    config = PretrainConfig(arch={**TINY_ARCH, **arch}, data_path=str(data_path), global_batch_size=global_batch_size)
    torch.manual_seed(seed)
    model = build_model(
        config.arch,
        batch_size=global_batch_size,
        seq_len=meta.seq_len,
        vocab_size=meta.vocab_size,
        num_puzzle_identifiers=meta.num_puzzle_identifiers,
    )
    with torch.no_grad():
        if q_scale:
            weight = model.model.inner.q_head.weight
            weight.copy_(q_scale * torch.randn(weight.shape, generator=torch.Generator().manual_seed(q_seed)))
            model.model.inner.q_head.bias.zero_()
        if model.model.inner.config.puzzle_emb_ndim:
            model.model.inner.puzzle_emb.weights.normal_(0.0, 1.0)
    return save_model_checkpoint(model, config, run_dir, step)
