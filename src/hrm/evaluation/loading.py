"""The checkpoints `evaluate.py` scores and the test split they are scored on, every fit checked before compute.

Each checkpoint file is read once (`Checkpoint.read`: its `all_config.yaml` and its state dict); the
test split is opened once and shared by every checkpoint of an ensemble. The split must fit the weights
(vocabulary, identifier count, sequence length); the model is then built with the split's sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from hrm.checkpoint import EMBED_TOKENS_KEY, PUZZLE_EMB_KEY, Checkpoint, stored_dataset_shapes
from hrm.config import PretrainConfig
from hrm.data.combined import identifier_paths_for
from hrm.errors import DatasetError
from hrm.evaluation.data import TestSplit, load_test_split
from hrm.models.registry import seq_len_from_state


def load_for_evaluation(
    files: Sequence[Path], device: torch.device, overrides: Sequence[str], check_identifiers: bool = True
) -> tuple[list[nn.Module], PretrainConfig, TestSplit]:
    """The models of `files`, the first one's config, and the test split of its datasets (`data_paths_test`,
    else `data_paths` / `data_path`), which every member of an ensemble is scored on.

    `check_identifiers=False` (identifier ablations that ignore the data's ids) accepts any identifier count:
    the embedding table keeps the checkpoint's rows.
    """
    first = Checkpoint.read(files[0])
    config = first.config(overrides)
    split = load_test_split(
        config.test_data_paths, identifier_paths_for(config.test_data_paths, config.train_data_paths)
    )
    models = [checked_model(first, config, split, device, check_identifiers)]
    for file in files[1:]:
        checkpoint = Checkpoint.read(file)
        models.append(checked_model(checkpoint, checkpoint.config(overrides), split, device, check_identifiers))
    return models, config, split


def checked_model(
    checkpoint: Checkpoint, config: PretrainConfig, split: TestSplit, device: torch.device, check_identifiers: bool
) -> nn.Module:
    """The checkpoint's model, after checking that `split` fits its weights."""
    meta = split.metadata
    check_fits(checkpoint, config, split, check_identifiers)
    shapes = meta.model_shapes()
    if not check_identifiers:
        table = checkpoint.state.get(PUZZLE_EMB_KEY)
        shapes["num_puzzle_identifiers"] = int(table.shape[0]) if table is not None else 1
    return checkpoint.build_model(config, shapes, device)


def check_fits(
    checkpoint: Checkpoint, config: PretrainConfig, split: TestSplit, check_identifiers: bool = True
) -> None:
    """The test split's vocabulary, identifier count and sequence length against the checkpoint's."""
    meta = split.metadata
    state = checkpoint.state
    embed = state.get(EMBED_TOKENS_KEY)
    fits: list[tuple[str, int, int | None]] = [
        ("vocab_size", meta.vocab_size, None if embed is None else int(embed.shape[0]))
    ]
    if check_identifiers:
        table = state.get(PUZZLE_EMB_KEY)
        fits.append(("num_puzzle_identifiers", meta.num_puzzle_identifiers, None if table is None else table.shape[0]))
    fits.append(("seq_len", meta.seq_len, trained_seq_len(checkpoint, config)))
    for name, dataset_value, checkpoint_value in fits:
        if checkpoint_value is not None and dataset_value != int(checkpoint_value):
            raise DatasetError(
                f"the dataset at {split.name} does not fit checkpoint {checkpoint.file}: {name} is "
                f"{dataset_value} in the data but {checkpoint_value} in the checkpoint; evaluate on the dataset it was trained on"
            )


def trained_seq_len(checkpoint: Checkpoint, config: PretrainConfig) -> int | None:
    """The sequence length the checkpoint was trained on: from the weights where they fix it (position
    tables, sequence MLPs), else from the training dataset its config names, when that folder is here."""
    from_weights = seq_len_from_state(config.arch, checkpoint.state)
    if from_weights is not None:
        return from_weights
    trained = stored_dataset_shapes(checkpoint.config())
    return None if trained is None else trained["seq_len"]
