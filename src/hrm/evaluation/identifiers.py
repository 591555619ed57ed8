"""Identifier ablation (`evaluate.py puzzle_identifiers=...`): how much a checkpoint leans on memorised ids.

HRM and TRM learn one embedding row per training puzzle. Evaluating the same test split with the rows
swapped out shows how much of the score comes from those memorised rows:

- `as_is`: the identifiers in the data (the normal evaluation);
- `blank`: every puzzle gets the blank identifier's row (what a never-seen puzzle gets);
- `mean`: every puzzle gets the mean of all the checkpoint's rows (the row adaptation starts from);
- `shuffled`: every test puzzle gets another test puzzle's row (a seeded random cyclic derangement of the
  distinct identifiers in the test split; they must be rows of the checkpoint's table).

The checkpoint is never changed: the embedding table is swapped for a temporary one while a mode runs,
and the puzzle identifiers in the data (which ARC voting needs to undo augmentations) stay as they are.
Without `as_is`, the dataset's identifier count need not be the checkpoint's: `blank` and `mean` ignore
the data's identifiers, so they run on held-out tasks with their own `identifiers.json`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from hrm.errors import ConfigError
from hrm.evaluation.data import TestSplit

logger = logging.getLogger(__name__)

MODES = ("as_is", "blank", "mean", "shuffled")
DATA_FREE_MODES = frozenset({"blank", "mean"})


def parse_modes(value: str | Sequence[str]) -> list[str]:
    """`as_is`, `blank,mean` or `[blank,mean]` -> the distinct modes in order; unknown names are a ConfigError."""
    items = value.split(",") if isinstance(value, str) else list(value)
    modes = list(dict.fromkeys(str(item).strip() for item in items if str(item).strip()))
    if not modes:
        raise ConfigError(f"puzzle_identifiers: give at least one of {', '.join(MODES)}")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ConfigError(
            f"puzzle_identifiers: {unknown[0]!r} is not a mode; choose from {', '.join(MODES)} (a comma list runs several)"
        )
    return modes


def needs_data_identifiers(modes: Sequence[str]) -> bool:
    """True when `as_is` runs: the dataset's identifiers must then be the checkpoint's (the normal check).

    `shuffled` alone only needs the test puzzles' ids to be rows of the table (checked when it runs).
    """
    return "as_is" in modes


def test_identifiers(split: TestSplit) -> np.ndarray:
    """The distinct non-blank identifiers of the test puzzles, sorted."""
    ids = np.unique(np.concatenate([np.asarray(s.puzzle_identifiers, dtype=np.int64) for s in split.sets.values()]))
    return ids[ids != split.metadata.blank_identifier_id]


def derangement(ids: np.ndarray, seed: int) -> np.ndarray:
    """A seeded random permutation of `ids` in which no identifier keeps its place (when there are two or more)."""
    order = np.random.default_rng(seed).permutation(ids)
    target = np.empty_like(ids)
    target[np.searchsorted(ids, order)] = np.roll(order, -1)
    return target


def ablation_table(weights: torch.Tensor, mode: str, split: TestSplit, seed: int) -> torch.Tensor:
    """The embedding table a mode evaluates with (a new tensor; `weights` is left untouched)."""
    rows = max(int(weights.shape[0]), split.metadata.num_puzzle_identifiers)
    if mode == "blank":
        return weights[split.metadata.blank_identifier_id].expand(rows, -1).clone()
    if mode == "mean":
        return weights.float().mean(dim=0).to(weights.dtype).expand(rows, -1).clone()
    table = weights.clone()
    if mode == "shuffled":
        ids = test_identifiers(split)
        check_shuffled(ids, int(weights.shape[0]))
        index = torch.as_tensor(ids, device=weights.device)
        table[index] = weights[torch.as_tensor(derangement(ids, seed), device=weights.device)]
    return table


def check_shuffled(ids: np.ndarray, rows: int) -> None:
    """`shuffled` needs the test puzzles' identifiers among the checkpoint's rows (else a ConfigError)."""
    if ids.size and ids.max() >= rows:
        raise ConfigError(
            f"puzzle_identifiers=shuffled: test puzzle identifier {int(ids.max())} is not among the checkpoint's "
            f"{rows} rows; use blank or mean on puzzles the checkpoint never saw"
        )


def check_modes(model: nn.Module, modes: Sequence[str], split: TestSplit) -> None:
    """Before any compute: every mode can run on this model and split. `shuffled` with fewer than two
    non-blank test identifiers has nothing to shuffle (the result is as_is's): one warning line."""
    if modes == ["as_is"]:
        return
    embedding = model.model.puzzle_emb
    if embedding is None:
        mode = next(m for m in modes if m != "as_is")
        raise ConfigError(
            f"puzzle_identifiers={mode}: the checkpoint has no puzzle embedding (arch.puzzle_emb_ndim=0); only as_is applies"
        )
    if "shuffled" in modes:
        ids = test_identifiers(split)
        check_shuffled(ids, int(embedding.weights.shape[0]))
        if ids.size < 2:
            logger.warning(
                "warning: puzzle_identifiers=shuffled: the test split has %d non-blank puzzle identifier(s), so there "
                "is nothing to shuffle and its result equals as_is",
                ids.size,
            )


@contextlib.contextmanager
def ablated(model: nn.Module, mode: str, split: TestSplit, seed: int = 0) -> Iterator[None]:
    """Evaluate `model` under `mode` inside the block; the checkpoint's table is restored afterwards."""
    if mode == "as_is":
        yield
        return
    embedding = model.model.puzzle_emb
    if embedding is None:
        raise ConfigError(
            f"puzzle_identifiers={mode}: the checkpoint has no puzzle embedding (arch.puzzle_emb_ndim=0); only as_is applies"
        )
    original = embedding.weights
    embedding.weights = ablation_table(original, mode, split, seed)
    try:
        yield
    finally:
        embedding.weights = original
