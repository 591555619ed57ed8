"""TRM, the Tiny Recursive Model (Jolicoeur-Martineau, 2025): one small network reused for both states.

A segment runs H_cycles cycles of `L_cycles` low-level updates `z_L = net(z_L, z_H + x)` followed by
one high-level update `z_H = net(z_H, z_L)`, with the same network `L_level` throughout. The first
H_cycles - 1 cycles run without gradient; the last cycle is differentiated through all of its
L_cycles + 1 updates (not HRM's one-step gradient). Blocks mix positions by attention or, with `mlp_t`,
by a SwiGLU across the sequence axis. Attribute names and creation order are TRM's, so state dicts
interchange with its code and a seed gives its initial weights.

`trm_singlez` is TRM's one-state ablation: z_L alone, `z_L = net(z_L + x)` L_cycles times, then
`z_L = net(z_L)`, heads on z_L.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from hrm.models.act import ACTModel, SegmentHook, linear_weight_count
from hrm.models.common import EmbeddingAndHeads, reset_state, truncated_unroll
from hrm.models.config import ModelConfig, puzzle_positions_for
from hrm.models.layers import Attention, ReasoningModule, SwiGLU, rms_norm, trunc_normal_init_


class TRMConfig(ModelConfig):
    """TRM's `arch.*` fields (its `config/arch/trm.yaml` defaults)."""

    H_cycles: int = Field(3, ge=1)
    L_cycles: int = Field(6, ge=1)
    H_layers: int = Field(0, ge=0, description="Accepted for TRM's configs and ignored: TRM has one network.")
    L_layers: int = Field(2, ge=1)
    pos_encodings: Literal["rope", "learned", "none"] = "rope"
    mlp_t: bool = Field(False, description="Mix positions with a SwiGLU across the sequence instead of attention.")
    puzzle_emb_len: int = Field(
        16, ge=0, description="Prepended puzzle positions; 0: ceil(puzzle_emb_ndim / hidden_size)."
    )
    no_ACT_continue: bool = Field(True, description="Halt on q_halt > 0 and learn no continue value.")

    @model_validator(mode="after")
    def _resolve_puzzle_positions(self) -> "TRMConfig":
        if self.puzzle_emb_len == 0:
            self.puzzle_emb_len = puzzle_positions_for(self.puzzle_emb_ndim, self.hidden_size)
        if self.puzzle_emb_ndim > self.puzzle_emb_len * self.hidden_size:
            raise ValueError(
                f"puzzle_emb_ndim={self.puzzle_emb_ndim} does not fit in puzzle_emb_len={self.puzzle_emb_len} "
                f"positions of hidden_size={self.hidden_size}; raise puzzle_emb_len or set it to 0 (derived)"
            )
        return self


@dataclass
class TRMInnerCarry:
    z_H: torch.Tensor
    z_L: torch.Tensor


class TRMBlock(nn.Module):
    """Post-Norm block: position mixing (attention, or with mlp_t a SwiGLU over the sequence axis), then a SwiGLU."""

    def __init__(self, config: TRMConfig):
        super().__init__()
        self.mlp_t_mixing = config.mlp_t
        if config.mlp_t:
            self.mlp_t = SwiGLU(config.seq_len + config.puzzle_emb_len, config.expansion)
        else:
            self.self_attn = Attention(
                config.hidden_size, config.num_heads, backend=config.attn_backend, causal=config.causal
            )
        self.mlp = SwiGLU(config.hidden_size, config.expansion)
        self.norm_eps = config.rms_norm_eps

    def forward(
        self, hidden_states: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        if self.mlp_t_mixing:
            # [batch, hidden, seq]: the MLP and its norm run over positions.
            transposed = hidden_states.transpose(1, 2)
            hidden_states = rms_norm(transposed + self.mlp_t(transposed), self.norm_eps).transpose(1, 2)
        else:
            hidden_states = rms_norm(hidden_states + self.self_attn(hidden_states, cos_sin=cos_sin), self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class TRMInner(EmbeddingAndHeads):
    """TRM's inner model. Modules are created in TRM's order (the seed-exact initialisation depends on it):
    embeddings, heads and positions, L_level, H_init, L_init."""

    def __init__(self, config: TRMConfig):
        super().__init__(config, config.puzzle_emb_len, config.pos_encodings)
        self.L_level = ReasoningModule([TRMBlock(config) for _ in range(config.L_layers)])
        self.register_buffer(
            "H_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0), persistent=True
        )
        self.register_buffer(
            "L_init", trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0), persistent=True
        )

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> TRMInnerCarry:
        shape = (batch_size, self.total_len, self.config.hidden_size)
        device = device if device is not None else self.H_init.device
        return TRMInnerCarry(
            z_H=torch.empty(shape, dtype=self.config.dtype, device=device),
            z_L=torch.empty(shape, dtype=self.config.dtype, device=device),
        )

    def reset_carry(self, reset_flag: torch.Tensor, carry: TRMInnerCarry) -> TRMInnerCarry:
        return TRMInnerCarry(
            z_H=reset_state(reset_flag, self.H_init, carry.z_H), z_L=reset_state(reset_flag, self.L_init, carry.z_L)
        )

    def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
        return self.heads(self.L_level(z_H, z_L, cos_sin=self.cos_sin()))[0]

    def _cycle(self, z_H, z_L, x, cos_sin, hook: SegmentHook | None):
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, z_H + x, cos_sin=cos_sin)
            if hook is not None:
                hook("L", z_H, z_L)
        z_H = self.L_level(z_H, z_L, cos_sin=cos_sin)
        if hook is not None:
            hook("H", z_H, z_L)
        return z_H, z_L

    def forward(self, carry: TRMInnerCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        cos_sin = self.cos_sin()
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])
        # The last cycle is differentiated through all of its updates.
        z_H, z_L = truncated_unroll(
            lambda _, state: self._cycle(*state, x, cos_sin, hook), (carry.z_H, carry.z_L), self.config.H_cycles - 1, 1
        )
        logits, q = self.heads(z_H)
        return TRMInnerCarry(z_H=z_H.detach(), z_L=z_L.detach()), logits, q


def _level_flops(level: ReasoningModule, config: TRMConfig, tokens: int) -> float:
    """Forward FLOPs of one pass through the shared network for one example."""
    total = 0.0
    for block in level.layers:
        total += 2 * tokens * linear_weight_count(block.mlp)
        if config.mlp_t:
            total += 2 * config.hidden_size * linear_weight_count(block.mlp_t)  # one column per hidden unit
        else:
            total += 2 * tokens * linear_weight_count(block.self_attn) + 4 * tokens * tokens * config.hidden_size
    return total


class TinyRecursiveReasoningModel_ACTV1(ACTModel):
    """TRM in the ACT outer loop (TRM's `recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1`)."""

    names = ("recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1",)
    config_class = TRMConfig
    small_fields = {"L_layers": 1, "H_cycles": 2, "L_cycles": 2, "puzzle_emb_len": 3}
    inner_class = TRMInner

    @property
    def needs_continue_target(self) -> bool:
        return not self.config.no_ACT_continue

    def wants_halt(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.no_ACT_continue:
            return outputs["q_halt_logits"] > 0
        return outputs["q_halt_logits"] > outputs["q_continue_logits"]

    @property
    def segment_schedule(self) -> tuple[int, int]:
        return self.config.H_cycles, self.config.L_cycles

    def _network_calls(self) -> tuple[int, int]:
        """(calls of the shared network per segment, of which with gradient)."""
        cfg = self.config
        return cfg.H_cycles * (cfg.L_cycles + 1), cfg.L_cycles + 1

    def segment_flops(self) -> tuple[float, float]:
        cfg, inner = self.config, self.inner
        tokens = inner.total_len
        level = _level_flops(inner.L_level, cfg, tokens)
        heads = tokens * 2 * linear_weight_count(inner.lm_head) + 2 * linear_weight_count(inner.q_head)
        calls, with_grad_calls = self._network_calls()
        forward = calls * level + heads
        with_grad = with_grad_calls * level + heads
        return float(forward), float(with_grad)

    @classmethod
    def positions_in_state(cls, state: dict[str, torch.Tensor]) -> int | None:
        mixing = state.get("model.inner.L_level.layers.0.mlp_t.gate_up_proj.weight")
        if mixing is not None:
            return int(mixing.shape[1])
        return super().positions_in_state(state)


@dataclass
class SingleZCarry:
    z_L: torch.Tensor

    @property
    def z_H(self) -> torch.Tensor:
        """The one state also plays z_H's part (the heads read it), so tools reading z_H work unchanged."""
        return self.z_L


class TRMSingleZInner(TRMInner):
    """One state z_L: `z_L = net(z_L + x)` L_cycles times, then `z_L = net(z_L)`; heads on z_L."""

    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> SingleZCarry:
        device = device if device is not None else self.L_init.device
        return SingleZCarry(
            z_L=torch.empty(batch_size, self.total_len, self.config.hidden_size, dtype=self.config.dtype, device=device)
        )

    def reset_carry(self, reset_flag: torch.Tensor, carry: SingleZCarry) -> SingleZCarry:
        return SingleZCarry(z_L=reset_state(reset_flag, self.L_init, carry.z_L))

    def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
        return self.heads(self.L_level(z_L, 0, cos_sin=self.cos_sin()))[0]

    def _cycle(self, z_H, z_L, x, cos_sin, hook: SegmentHook | None):
        for _ in range(self.config.L_cycles):
            z_L = self.L_level(z_L, x, cos_sin=cos_sin)
            if hook is not None:
                hook("L", z_L, z_L)
        z_L = self.L_level(z_L, 0, cos_sin=cos_sin)
        if hook is not None:
            hook("H", z_L, z_L)
        return z_L, z_L

    def forward(self, carry: SingleZCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        cos_sin = self.cos_sin()
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])
        z_L = truncated_unroll(
            lambda _, z: self._cycle(z, z, x, cos_sin, hook)[1], carry.z_L, self.config.H_cycles - 1, 1
        )
        logits, q = self.heads(z_L)
        return SingleZCarry(z_L=z_L.detach()), logits, q


class TinyRecursiveReasoningModel_SingleZ(TinyRecursiveReasoningModel_ACTV1):
    """TRM's one-state ablation (`recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1`)."""

    names = ("recursive_reasoning.trm_singlez@TinyRecursiveReasoningModel_ACTV1",)
    inner_class = TRMSingleZInner
