"""Name -> class look-ups for architectures and loss heads, from the tables their classes fill when defined.

Each architecture lists its own `names` (the originals' `arch.name` strings, so their `all_config.yaml`
files resolve here, and ours resolve in the originals) and registers itself when its class is defined
(`ACTModel.__init_subclass__`); loss heads do the same (`LossHead.__init_subclass__`). Importing `hrm.models`
imports every module of the package, so adding a model or a loss head edits no list here.
This module does not import the training configuration; `arch` arguments only need `.name`, `.loss` and
`.model_extra` (the user's model fields).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hrm.errors import ConfigError
from hrm.models.act import MODELS, ACTModel
from hrm.models.config import ModelConfig
from hrm.models.losses import LOSS_HEADS, LossHead


def architectures() -> tuple[type[ACTModel], ...]:
    """Every registered architecture class once, in registration order."""
    return tuple(dict.fromkeys(MODELS.values()))


def model_class(name: str) -> type[ACTModel]:
    if name not in MODELS:
        raise ConfigError(f"arch.name={name!r} is unknown; known architectures: {', '.join(MODELS)}")
    return MODELS[name]


def loss_class(name: str) -> type[LossHead]:
    if name not in LOSS_HEADS:
        raise ConfigError(f"arch.loss.name={name!r} is unknown; known loss heads: {', '.join(LOSS_HEADS)}")
    return LOSS_HEADS[name]


def model_config(
    arch: Any, *, batch_size: int, seq_len: int, vocab_size: int, num_puzzle_identifiers: int
) -> ModelConfig:
    """The model's validated config: the user's `arch.*` fields plus the data-filled sizes."""
    cls = model_class(arch.name)
    fields: dict[str, Any] = dict(arch.model_extra or {})
    return cls.config_class(
        batch_size=batch_size,
        seq_len=seq_len,
        vocab_size=vocab_size,
        num_puzzle_identifiers=num_puzzle_identifiers,
        **fields,
    )


def puzzle_positions(arch: Any) -> int:
    """Positions the architecture prepends for the puzzle embedding (independent of the data sizes)."""
    return model_config(arch, batch_size=1, seq_len=1, vocab_size=1, num_puzzle_identifiers=1).puzzle_emb_len


def seq_len_from_state(arch: Any, state: dict[str, torch.Tensor]) -> int | None:
    """The training seq_len where the weights fix it (position tables, sequence-mixing MLPs), else None."""
    positions = model_class(arch.name).positions_in_state(state)
    return None if positions is None else positions - puzzle_positions(arch)


def build_model(arch: Any, *, batch_size: int, seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> nn.Module:
    """The loss-head-wrapped model (`model.model.inner...`), as the original builds it."""
    from hrm.models.attention import check_backend_available

    config = model_config(
        arch,
        batch_size=batch_size,
        seq_len=seq_len,
        vocab_size=vocab_size,
        num_puzzle_identifiers=num_puzzle_identifiers,
    )
    check_backend_available(config.attn_backend)
    model = model_class(arch.name)(config)
    return loss_class(arch.loss.name)(model, loss_type=arch.loss.loss_type)
