"""The Hierarchical Reasoning Model: a slow high-level module H and a fast low-level module L.

One segment runs H_cycles x L_cycles low-level updates and H_cycles high-level updates. Only the
final L update and the final H update carry gradient ("one-step gradient"); everything before them
runs under no_grad, so memory does not grow with the number of cycles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from hrm.models.act import ACTModel, SegmentHook, linear_weight_count
from hrm.models.config import ModelConfig, WidthDerivedPuzzlePositions
from hrm.models.layers import (
    CastedEmbedding,
    CastedLinear,
    PostNormBlock,
    ReasoningModule,
    RotaryEmbedding,
    trunc_normal_init_,
)
from hrm.models.sparse_embedding import CastedSparseEmbedding

LEARNED_POS_SCALE = 0.707106781  # 1/sqrt(2): keeps token + position embeddings at unit scale


class HRMConfig(WidthDerivedPuzzlePositions):
    H_cycles: int = Field(2, ge=1)
    L_cycles: int = Field(2, ge=1)
    H_layers: int = Field(4, ge=0)
    L_layers: int = Field(4, ge=0)


@dataclass
class HRMInnerCarry:
    z_H: torch.Tensor
    z_L: torch.Tensor


class InputEmbedding(nn.Module):
    """Token embedding, optional puzzle-embedding positions in front, and learned or rotary positions.

    Shared by every architecture so that their inputs are prepared identically. With `with_heads`, the
    output heads `lm_head` and `q_head` are created between the token embedding and the puzzle embedding:
    the original's creation order, which fixes how the seeded generator is consumed.
    """

    def __init__(self, config: ModelConfig, with_heads: bool = False):
        super().__init__()
        self.config = config
        self.embed_scale = math.sqrt(config.hidden_size)
        embed_init_std = 1.0 / self.embed_scale
        self.puzzle_emb_len = config.puzzle_emb_len
        self.total_len = config.seq_len + self.puzzle_emb_len
        self.embed_tokens = CastedEmbedding(
            config.vocab_size, config.hidden_size, init_std=embed_init_std, cast_to=config.dtype
        )
        if with_heads:
            self.lm_head = CastedLinear(config.hidden_size, config.vocab_size, bias=False)
            self.q_head = CastedLinear(config.hidden_size, 2, bias=True)
            with torch.no_grad():
                # Start the Q-head near "never halt" (sigmoid(-5) ~ 0.007) so early training explores.
                self.q_head.weight.zero_()
                self.q_head.bias.fill_(-5.0)
        if config.puzzle_emb_ndim > 0:
            self.puzzle_emb = CastedSparseEmbedding(
                config.num_puzzle_identifiers, config.puzzle_emb_ndim, init_std=0.0, cast_to=config.dtype
            )
        if config.pos_encodings == "rope":
            self.rotary_emb = RotaryEmbedding(config.hidden_size // config.num_heads, self.total_len, config.rope_theta)
        else:
            self.embed_pos = CastedEmbedding(
                self.total_len, config.hidden_size, init_std=embed_init_std, cast_to=config.dtype
            )

    def cos_sin(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.rotary_emb() if self.config.pos_encodings == "rope" else None

    def embed(self, inputs: torch.Tensor, puzzle_identifiers: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        embedding = self.embed_tokens(inputs.to(torch.int32))
        if cfg.puzzle_emb_ndim > 0:
            puzzle = self.puzzle_emb(puzzle_identifiers)
            pad = self.puzzle_emb_len * cfg.hidden_size - puzzle.shape[-1]
            if pad > 0:
                puzzle = F.pad(puzzle, (0, pad))
            embedding = torch.cat((puzzle.view(-1, self.puzzle_emb_len, cfg.hidden_size), embedding), dim=-2)
        if cfg.pos_encodings == "learned":
            embedding = LEARNED_POS_SCALE * (embedding + self.embed_pos.embedding_weight.to(cfg.dtype))
        return self.embed_scale * embedding


class HRMInner(InputEmbedding):
    """One segment of HRM. Attribute names equal the original's, so state dicts interchange."""

    def __init__(self, config: HRMConfig):
        # Creation order = the original's (embeddings and heads, H blocks, L blocks, H_init, L_init), so a seed
        # draws the original's initial weights.
        super().__init__(config, with_heads=True)

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
        flag = reset_flag.view(-1, 1, 1)
        return HRMInnerCarry(
            z_H=torch.where(flag, self.H_init, carry.z_H), z_L=torch.where(flag, self.L_init, carry.z_L)
        )

    def heads(self, z_H: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Token logits (puzzle positions dropped) and the (halt, continue) Q-logits in float32."""
        logits = self.lm_head(z_H)[:, self.puzzle_emb_len :]
        q_logits = self.q_head(z_H[:, 0]).to(torch.float32)
        return logits, (q_logits[..., 0], q_logits[..., 1])

    def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
        """Logits of the H update applied to the current states, without storing it (the tracer's per-step view)."""
        return self.heads(self.H_level(z_H, z_L, cos_sin=self.cos_sin()))[0]

    def forward(self, carry: HRMInnerCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        cfg = self.config
        cos_sin = self.cos_sin()
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])
        z_H, z_L = carry.z_H, carry.z_L
        with torch.no_grad():
            for h_step in range(cfg.H_cycles):
                for l_step in range(cfg.L_cycles):
                    if h_step == cfg.H_cycles - 1 and l_step == cfg.L_cycles - 1:
                        break
                    z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
                    if hook is not None:
                        hook("L", z_H, z_L)
                if h_step < cfg.H_cycles - 1:
                    z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
                    if hook is not None:
                        hook("H", z_H, z_L)
        # The one-step gradient: only these two updates are differentiated.
        z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
        if hook is not None:
            hook("L", z_H, z_L)
        z_H = self.H_level(z_H, z_L, cos_sin=cos_sin)
        if hook is not None:
            hook("H", z_H, z_L)
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
