"""URM, the Universal Reasoning Model (Gao et al., 2025): one shared Transformer stack looped over one state.

One ACT step (URM's "loop") runs `H_cycles * L_cycles` inner loops `h = layers(h + x)` over the single
hidden state `current_hidden`: the first `(H_cycles - 1) * L_cycles` without gradient (truncated
backpropagation through loops), the last `L_cycles` with it. Blocks are Post-Norm attention (RoPE always)
plus ConvSwiGLU, a SwiGLU whose activation passes through a causal depthwise convolution of kernel 2
along the sequence. That convolution, the SiLU after it and `down_proj` run in bfloat16 whatever the
forward dtype (its weight and bias are stored in bfloat16), as URM's code does, so results match it.

Attribute names, dtypes, creation order and draws are URM's (`urm.urm@URM`), so state dicts interchange
with its code and a seed gives its initial weights. Halting: `q_halt > 0`, no continue target, `loops`
steps at most (the protocol's `halt_max_steps`), exploration probability `halt_exploration_prob`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from torch import nn

from hrm.models.act import ACTModel, SegmentHook, linear_weight_count
from hrm.models.common import EmbeddingAndHeads, reset_state, truncated_unroll
from hrm.models.config import ModelConfig, puzzle_positions_for
from hrm.models.layers import Attention, CastedLinear, rms_norm, swiglu_intermediate_size, trunc_normal_init_

logger = logging.getLogger(__name__)

URM_NAME = "urm.urm@URM"
# Keys URM's `arch/urm.yaml` puts under `arch` that its model never reads (training keys that landed there).
DEAD_ARCH_KEYS = (
    "loop_deltas",
    "profile",
    "eval_interval",
    "checkpoint_every_eval",
    "checkpoint_path",
    "ema",
    "ema_rate",
)
CONV_DTYPE = torch.bfloat16  # URM's depthwise convolution and the MLP tail after it
CONV_KERNEL = 2
_warned_dead_keys: set[tuple[str, ...]] = set()


class URMConfig(ModelConfig):
    """URM's `arch.*` fields (defaults of its `arch/urm.yaml`), plus `halt_exploration_prob` (URM: 0.1 fixed).

    `loops` is URM's name for the maximum number of ACT steps; `halt_max_steps` follows it (the evaluator's
    sweeps change that one alone). `pos_encodings` is accepted but never read: URM always uses RoPE.
    """

    num_layers: int = Field(8, ge=1)
    loops: int = Field(16, ge=1)
    H_cycles: int = Field(4, ge=1)
    L_cycles: int = Field(3, ge=1)
    pos_encodings: str = "rope"  # type: ignore[assignment]
    puzzle_emb_ndim: int = Field(0, ge=0)
    attn_dropout: float = Field(0.0, ge=0.0, le=1.0, description="Accepted, unused (as in URM).")
    mlp_dropout: float = Field(0.0, ge=0.0, le=1.0, description="Accepted, unused (as in URM).")

    @model_validator(mode="before")
    @classmethod
    def _drop_dead_keys_and_alias(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        dead = tuple(key for key in DEAD_ARCH_KEYS if key in data)
        for key in dead:
            data.pop(key)
        if dead and dead not in _warned_dead_keys:
            _warned_dead_keys.add(dead)
            logger.warning("arch: ignoring URM's unused keys %s (URM's model never reads them)", ", ".join(dead))
        if "halt_max_steps" in data:
            steps = data.pop("halt_max_steps")
            if "loops" not in data:
                data["loops"] = steps
            elif data["loops"] != steps:
                raise PydanticCustomError(
                    "loops",
                    "URM's maximum number of steps is arch.loops; halt_max_steps={steps} disagrees with loops={loops}",
                    {"steps": steps, "loops": data["loops"]},
                )
        return data

    @model_validator(mode="after")
    def _loops_are_halt_max_steps(self) -> "URMConfig":
        if (self.hidden_size // self.num_heads) % 2:
            raise PydanticCustomError(
                "heads",
                "hidden_size/num_heads={head_dim} must be even (URM always uses RoPE); change num_heads or hidden_size",
                {"head_dim": self.hidden_size // self.num_heads},
            )
        self.halt_max_steps = self.loops
        return self

    @property
    def puzzle_emb_len(self) -> int:
        return puzzle_positions_for(self.puzzle_emb_ndim, self.hidden_size)


@dataclass
class URMInnerCarry:
    current_hidden: torch.Tensor

    @property
    def z_H(self) -> torch.Tensor:
        """The one state, under the name tools written for HRM and TRM read."""
        return self.current_hidden

    @property
    def z_L(self) -> torch.Tensor:
        return self.current_hidden


class ConvSwiGLU(nn.Module):
    """SwiGLU with a causal depthwise convolution (kernel 2) on its activation, run in bfloat16.

    `c[t] = w0 * a[t-1] + w1 * a[t] + b` per channel, `a[-1] = 0`; then SiLU and `down_proj`, both in bfloat16.
    """

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = swiglu_intermediate_size(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        # PyTorch's default Conv1d initialisation (drawn in float32), then stored in bfloat16.
        self.dwconv = nn.Conv1d(inter, inter, CONV_KERNEL, padding=CONV_KERNEL - 1, groups=inter, bias=True).to(
            CONV_DTYPE
        )
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        activation = (F.silu(gate) * up).to(CONV_DTYPE)
        seq_len = activation.shape[1]
        conv = self.dwconv(activation.transpose(1, 2))[..., :seq_len]
        return self.down_proj(F.silu(conv).transpose(1, 2))


class URMBlock(nn.Module):
    """Post-Norm: h = rmsnorm(h + attn(h)); h = rmsnorm(h + convswiglu(h))."""

    def __init__(self, config: URMConfig):
        super().__init__()
        self.self_attn = Attention(
            config.hidden_size, config.num_heads, backend=config.attn_backend, causal=config.causal
        )
        self.mlp = ConvSwiGLU(config.hidden_size, config.expansion)
        self.norm_eps = config.rms_norm_eps

    def forward(self, hidden_states: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        hidden_states = rms_norm(hidden_states + self.self_attn(hidden_states, cos_sin=cos_sin), self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class URMInner(EmbeddingAndHeads):
    """URM's inner model. Modules are created in URM's order (the seed-exact initialisation depends on it):
    embed_tokens, lm_head, q_head, puzzle_emb, rotary_emb (always RoPE), layers, init_hidden."""

    def __init__(self, config: URMConfig):
        super().__init__(config, config.puzzle_emb_len, "rope")
        self.layers = nn.ModuleList([URMBlock(config) for _ in range(config.num_layers)])
        self.register_buffer(
            "init_hidden",
            trunc_normal_init_(torch.empty(config.hidden_size, dtype=config.dtype), std=1.0),
            persistent=True,
        )

    # ---- carry
    def empty_carry(self, batch_size: int, device: torch.device | str | None = None) -> URMInnerCarry:
        device = device if device is not None else self.init_hidden.device
        shape = (batch_size, self.total_len, self.config.hidden_size)
        return URMInnerCarry(current_hidden=torch.empty(shape, dtype=self.config.dtype, device=device))

    def reset_carry(self, reset_flag: torch.Tensor, carry: URMInnerCarry) -> URMInnerCarry:
        return URMInnerCarry(current_hidden=reset_state(reset_flag, self.init_hidden, carry.current_hidden))

    # ---- the loop
    def inner_loop(self, hidden: torch.Tensor, x: torch.Tensor, cos_sin) -> torch.Tensor:
        """One pass of the shared stack over the state with the input added: layers(h + x)."""
        hidden = hidden + x
        for layer in self.layers:
            hidden = layer(hidden, cos_sin)
        return hidden

    def _unroll(self, hidden, x, cos_sin, hook: SegmentHook | None) -> torch.Tensor:
        """(H_cycles - 1) * L_cycles inner loops without gradient, then L_cycles with it.

        The hook sees the state after every inner loop ("L") and after every L_cycles of them ("H").
        """
        cfg = self.config

        def step(i: int, hidden: torch.Tensor) -> torch.Tensor:
            hidden = self.inner_loop(hidden, x, cos_sin)
            if hook is not None:
                hook("L", hidden, hidden)
                if (i + 1) % cfg.L_cycles == 0:
                    hook("H", hidden, hidden)
            return hidden

        return truncated_unroll(step, hidden, (cfg.H_cycles - 1) * cfg.L_cycles, cfg.L_cycles)

    def decode_step(self, z_H: torch.Tensor, z_L: torch.Tensor) -> torch.Tensor:
        """The logits of the current state (URM has no separate answer update)."""
        return self.heads(z_L)[0]

    def forward(self, carry: URMInnerCarry, batch: dict[str, torch.Tensor], hook: SegmentHook | None = None):
        cos_sin = self.cos_sin()
        x = self.embed(batch["inputs"], batch["puzzle_identifiers"])
        hidden = self._unroll(carry.current_hidden, x, cos_sin, hook)
        logits, q = self.heads(hidden)
        return URMInnerCarry(current_hidden=hidden.detach()), logits, q


class URM(ACTModel):
    """URM in the ACT outer loop (URM's `urm.urm@URM`): halts on q_halt > 0, learns no continue value."""

    names = (URM_NAME,)
    config_class = URMConfig
    small_fields = {"num_layers": 1, "H_cycles": 2, "L_cycles": 2}
    inner_class = URMInner

    @property
    def needs_continue_target(self) -> bool:
        return False

    def wants_halt(self, outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return outputs["q_halt_logits"] > 0

    @property
    def segment_schedule(self) -> tuple[int, int]:
        return self.config.H_cycles, self.config.L_cycles

    def segment_flops(self) -> tuple[float, float]:
        cfg, inner = self.config, self.inner
        tokens = inner.total_len
        inter = swiglu_intermediate_size(cfg.hidden_size, cfg.expansion)
        per_layer = (
            2 * linear_weight_count(inner.layers[0])  # qkv, o, gate_up, down projections
            + 4 * tokens * cfg.hidden_size  # QK^T and AV
            + 2 * CONV_KERNEL * inter  # the depthwise convolution
        )
        loop = tokens * cfg.num_layers * per_layer
        heads = tokens * 2 * linear_weight_count(inner.lm_head) + 2 * linear_weight_count(inner.q_head)
        forward = cfg.H_cycles * cfg.L_cycles * loop + heads
        with_grad = cfg.L_cycles * loop + heads
        return float(forward), float(with_grad)
