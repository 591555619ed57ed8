"""The "direct prediction" Transformer baseline of the HRM paper, in the same ACT outer loop.

Same width, blocks, embeddings and heads as HRM, but one stack of `num_layers` blocks run once per
segment (full gradient). With `halt_max_steps=1` it predicts in one pass; larger values give the
"Transformer + outer refinement loop" of the ARC Prize team's ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from pydantic import Field

from hrm.models.act import ACTModel, SegmentHook, linear_weight_count
from hrm.models.common import EmbeddingAndHeads, reset_state
from hrm.models.config import WidthDerivedPuzzlePositions
from hrm.models.layers import PostNormBlock, ReasoningModule, trunc_normal_init_


class TransformerConfig(WidthDerivedPuzzlePositions):
    """The paper's "direct prediction" baseline: one stack of `num_layers` blocks, run once per segment."""

    num_layers: int = Field(8, ge=1)
    halt_max_steps: int = Field(1, ge=1)


@dataclass
class TransformerCarry:
    z_H: torch.Tensor  # the stack's output state, named like HRM's so analysis tools read both


class TransformerInner(EmbeddingAndHeads):
    """The baseline has no original; its draws follow HRM's order with one stack: `embed_tokens`, `lm_head`,
    `q_head` (drawn, then zeroed), `puzzle_emb` (zeros, no draws), `embed_pos` (learned positions only), the
    `layers` blocks (per block qkv_proj, o_proj, gate_up_proj, down_proj), `H_init`."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config, config.puzzle_emb_len, config.pos_encodings)
        self.layers = ReasoningModule(
            [
                PostNormBlock(
                    config.hidden_size,
                    config.num_heads,
                    config.expansion,
                    config.rms_norm_eps,
                    attn_backend=config.attn_backend,
                    causal=config.causal,
                )
                for _ in range(config.num_layers)
            ]
        )
        self.register_buffer(
            "H_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0), persistent=True
        )

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> TransformerCarry:
        device = device if device is not None else self.H_init.device
        return TransformerCarry(
            z_H=torch.empty(batch_size, self.total_len, self.config.hidden_size, dtype=self.config.dtype, device=device)
        )

    def reset_carry(self, reset_flag: torch.Tensor, carry: TransformerCarry) -> TransformerCarry:
        return TransformerCarry(z_H=reset_state(reset_flag, self.H_init, carry.z_H))

    def forward(self, carry: TransformerCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])
        z = self.layers(carry.z_H, x, cos_sin=self.cos_sin())
        logits, q = self.heads(z)
        return TransformerCarry(z_H=z.detach()), logits, q


class TransformerBaselineACT(ACTModel):
    names = ("hrm.transformer_baseline@TransformerBaselineACT",)
    config_class = TransformerConfig
    small_fields = {"num_layers": 2}
    inner_class = TransformerInner

    def segment_flops(self) -> tuple[float, float]:
        cfg, inner = self.config, self.inner
        tokens = inner.total_len
        blocks = tokens * (2 * linear_weight_count(inner.layers) + cfg.num_layers * 4 * tokens * cfg.hidden_size)
        forward = blocks + tokens * 2 * linear_weight_count(inner.lm_head) + 2 * linear_weight_count(inner.q_head)
        return float(forward), float(forward)
