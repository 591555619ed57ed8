"""Explicit name -> class tables for architectures and loss heads.

The names are the strings of the original's `arch.name` / `arch.loss.name`, so its `all_config.yaml`
files resolve here, and ours resolve in the original (HRM only).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hrm.config import ACT_LOSS_NAME, HRM_ARCH_NAME, TRANSFORMER_ARCH_NAME, ArchConfig
from hrm.errors import ConfigError
from hrm.models.act import ACTModel
from hrm.models.config import ModelConfig
from hrm.models.hrm import HierarchicalReasoningModel_ACTV1
from hrm.models.losses import ACTLossHead
from hrm.models.transformer import TransformerBaselineACT

MODELS: dict[str, type[ACTModel]] = {
    HRM_ARCH_NAME: HierarchicalReasoningModel_ACTV1,
    TRANSFORMER_ARCH_NAME: TransformerBaselineACT,
}
LOSS_HEADS: dict[str, type[nn.Module]] = {ACT_LOSS_NAME: ACTLossHead}


def model_class(name: str) -> type[ACTModel]:
    if name not in MODELS:
        raise ConfigError(f"arch.name={name!r} is unknown; known architectures: {', '.join(MODELS)}")
    return MODELS[name]


def loss_class(name: str) -> type[nn.Module]:
    if name not in LOSS_HEADS:
        raise ConfigError(f"arch.loss.name={name!r} is unknown; known loss heads: {', '.join(LOSS_HEADS)}")
    return LOSS_HEADS[name]


def model_config(arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> ModelConfig:
    """The model's validated config: the user's `arch.*` fields plus the data-filled sizes."""
    cls = model_class(arch.name)
    fields: dict[str, Any] = dict(arch.model_extra or {})
    return cls.config_class(batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                            num_puzzle_identifiers=num_puzzle_identifiers, **fields)


def build_model(arch: ArchConfig, *, batch_size: int, seq_len: int, vocab_size: int, num_puzzle_identifiers: int) -> nn.Module:
    """The loss-head-wrapped model (`model.model.inner...`), as the original builds it."""
    from hrm.models.attention import check_backend_available

    config = model_config(arch, batch_size=batch_size, seq_len=seq_len, vocab_size=vocab_size,
                          num_puzzle_identifiers=num_puzzle_identifiers)
    check_backend_available(config.attn_backend)
    model = model_class(arch.name)(config)
    return loss_class(arch.loss.name)(model, loss_type=arch.loss.loss_type)
