"""Tiny models and batches for the core tests."""

from __future__ import annotations

import torch

from hrm.config import validate_config
from hrm.models.registry import build_model

TINY_ARCH = dict(
    hidden_size=32,
    num_heads=4,
    expansion=2,
    H_layers=1,
    L_layers=1,
    H_cycles=2,
    L_cycles=2,
    puzzle_emb_ndim=32,
    halt_max_steps=4,
    halt_exploration_prob=0.0,
    forward_dtype="float32",
    pos_encodings="rope",
)


def tiny_model(seq_len: int = 12, vocab_size: int = 7, num_ids: int = 5, batch_size: int = 4, **arch):
    cfg = validate_config({"arch": {**TINY_ARCH, **arch}})
    model = build_model(
        cfg.arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size, num_puzzle_identifiers=num_ids
    )
    # Non-trivial puzzle embeddings and Q-head, so those paths are exercised.
    inner = model.model.inner
    with torch.no_grad():
        if hasattr(inner, "puzzle_emb"):
            inner.puzzle_emb.weights.normal_()
        inner.q_head.weight.normal_(std=0.5)
        inner.q_head.bias.normal_()
    return model, cfg


def tiny_batch(batch_size: int = 4, seq_len: int = 12, vocab_size: int = 7, num_ids: int = 5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, vocab_size, (batch_size, seq_len), generator=gen, dtype=torch.int32)
    labels[:, :2] = -100
    return {
        "inputs": torch.randint(0, vocab_size, (batch_size, seq_len), generator=gen, dtype=torch.int32),
        "labels": labels,
        "puzzle_identifiers": torch.randint(0, num_ids, (batch_size,), generator=gen, dtype=torch.int32),
    }
