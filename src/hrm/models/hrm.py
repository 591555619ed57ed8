"""The Hierarchical Reasoning Model: a slow high-level module H and a fast low-level module L.

One segment runs H_cycles x L_cycles low-level updates and H_cycles high-level updates. Only the
final L update and the final H update carry gradient ("one-step gradient"); everything before them
runs under no_grad, so memory does not grow with the number of cycles.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field
from torch import nn

from hrm.models.act import ACTModel, SegmentHook, linear_weight_count
from hrm.models.common import EmbeddingAndHeads, reset_state, truncated_unroll
from hrm.models.config import WidthDerivedPuzzlePositions
from hrm.models.layers import PostNormBlock, ReasoningModule, trunc_normal_init_


class HRMConfig(WidthDerivedPuzzlePositions):
    H_cycles: int = Field(2, ge=1)
    L_cycles: int = Field(2, ge=1)
    H_layers: int = Field(4, ge=0)
    L_layers: int = Field(4, ge=0)


@dataclass
class HRMInnerCarry:
    z_H: torch.Tensor
    z_L: torch.Tensor


class HRMInner(EmbeddingAndHeads):
    """One segment of HRM. Attribute names equal the original's, so state dicts interchange."""

    def __init__(self, config: HRMConfig):
        # Creation order = the original's (embeddings and heads, H blocks, L blocks, H_init, L_init), so a seed
        # draws the original's initial weights.
        super().__init__(config, config.puzzle_emb_len, config.pos_encodings)

        def stack(num_layers: int) -> ReasoningModule:
            return ReasoningModule(
                [
                    PostNormBlock(
                        config.hidden_size,
                        config.num_heads,
                        config.expansion,
                        config.rms_norm_eps,
                        attn_backend=config.attn_backend,
                        causal=config.causal,
                    )
                    for _ in range(num_layers)
                ]
            )

        self.H_level = stack(config.H_layers)
        self.L_level = stack(config.L_layers)
        self.register_buffer(
            "H_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0), persistent=True
        )
        self.register_buffer(
            "L_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0), persistent=True
        )

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> HRMInnerCarry:
        shape = (batch_size, self.total_len, self.config.hidden_size)
        device = device if device is not None else self.H_init.device
        return HRMInnerCarry(
            z_H=torch.empty(shape, dtype=self.config.dtype, device=device),
            z_L=torch.empty(shape, dtype=self.config.dtype, device=device),
        )

    def reset_carry(self, reset_flag: torch.Tensor, carry: HRMInnerCarry) -> HRMInnerCarry:
        return HRMInnerCarry(
            z_H=reset_state(reset_flag, self.H_init, carry.z_H), z_L=reset_state(reset_flag, self.L_init, carry.z_L)
        )

    def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
        """Logits of the H update applied to the current states, without storing it (the tracer's per-step view)."""
        return self.heads(self.H_level(z_H, z_L, cos_sin=self.cos_sin()))[0]

    def forward(self, carry: HRMInnerCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        cfg = self.config
        cos_sin = self.cos_sin()
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])

        def step(i: int, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            """One L update; the last of each cycle's L_cycles is followed by the H update."""
            z_H, z_L = state
            z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
            if hook is not None:
                hook("L", z_H, z_L)
            if (i + 1) % cfg.L_cycles == 0:
                z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
                if hook is not None:
                    hook("H", z_H, z_L)
            return z_H, z_L

        # The one-step gradient: only the last L update and the H update after it are differentiated.
        z_H, z_L = truncated_unroll(step, (carry.z_H, carry.z_L), cfg.H_cycles * cfg.L_cycles - 1, 1)
        logits, q = self.heads(z_H)
        return HRMInnerCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, q


class HierarchicalReasoningModel_ACTV1(ACTModel):
    """HRM in the ACT outer loop (the original's `hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1`)."""

    names = ("hrm.hrm_act_v1@HierarchicalReasoningModel_ACTV1",)
    config_class = HRMConfig
    small_fields = {"H_layers": 1, "L_layers": 1, "H_cycles": 2, "L_cycles": 2}
    inner_class = HRMInner

    @property
    def segment_schedule(self) -> tuple[int, int]:
        return self.config.H_cycles, self.config.L_cycles

    def segment_flops(self) -> tuple[float, float]:
        cfg, inner = self.config, self.inner
        tokens = inner.total_len
        attention = 4 * tokens * cfg.hidden_size  # per token per block: QK^T and AV

        def stack(module: nn.Module, num_layers: int) -> float:
            return tokens * (2 * linear_weight_count(module) + num_layers * attention)

        heads = tokens * 2 * linear_weight_count(inner.lm_head) + 2 * linear_weight_count(inner.q_head)
        low, high = stack(inner.L_level, cfg.L_layers), stack(inner.H_level, cfg.H_layers)
        forward = cfg.H_cycles * cfg.L_cycles * low + cfg.H_cycles * high + heads
        with_grad = low + high + heads  # the one-step gradient: backward costs twice these
        return float(forward), float(with_grad)
