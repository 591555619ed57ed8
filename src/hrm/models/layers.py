"""The building blocks of HRM: casted linear/embedding layers, RoPE, RMSNorm, SwiGLU, attention, blocks.

Weights stay in float32 and are cast to the activation dtype at use ("casted" layers), so bf16
training keeps float32 master weights without an AMP context; this is what the original does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hrm.models.attention import AttentionBackend, attention


def truncated_normal_std_correction(lower: float = -2.0, upper: float = 2.0) -> float:
    """Standard deviation of a unit normal truncated to [lower, upper] (about 0.88 at +-2).

    Drawing with `std / correction` gives samples whose *true* std is `std`, as JAX and Flax do.
    The arithmetic follows the original's order term by term, so the scale is bit-identical to the original's.
    """
    sqrt2 = math.sqrt(2.0)
    mass = (math.erf(upper / sqrt2) - math.erf(lower / sqrt2)) / 2
    inv_sqrt_2pi = (2 * math.pi) ** -0.5
    pdf_lower = inv_sqrt_2pi * math.exp(-0.5 * lower**2)
    pdf_upper = inv_sqrt_2pi * math.exp(-0.5 * upper**2)
    return math.sqrt(1 - (upper * pdf_lower - lower * pdf_upper) / mass - ((pdf_lower - pdf_upper) / mass) ** 2)


def trunc_normal_init_(tensor: torch.Tensor, std: float = 1.0, lower: float = -2.0, upper: float = 2.0) -> torch.Tensor:
    """Fill `tensor` from a normal truncated at `lower`/`upper` std whose true std is `std`.

    Consumes the tensor's generator exactly as the original does (one `uniform_` over the erf of the bounds,
    then `erfinv_`, scale, clip): with the same seed and creation order the weights equal the original's.
    `std=0` fills zeros and draws nothing.
    """
    with torch.no_grad():
        if std == 0:
            return tensor.zero_()
        sqrt2 = math.sqrt(2.0)
        scale = std / truncated_normal_std_correction(lower, upper)
        tensor.uniform_(math.erf(lower / sqrt2), math.erf(upper / sqrt2))
        tensor.erfinv_()
        tensor.mul_(sqrt2 * scale)
        return tensor.clip_(lower * scale, upper * scale)


class CastedLinear(nn.Module):
    """Linear layer with truncated LeCun-normal init (true std 1/sqrt(fan_in)), cast to the input dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(
            trunc_normal_init_(torch.empty(out_features, in_features), std=1.0 / math.sqrt(in_features))
        )
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return F.linear(x, self.weight.to(x.dtype), bias)


class CastedEmbedding(nn.Module):
    """Embedding table kept in float32, looked up and cast to `cast_to`.

    The parameter is called `embedding_weight` (not `weight`) so state-dict keys match the original.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(
            trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std)
        )

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """Rotary position tables (cos, sin) of shape [max_positions, head_dim], computed in float32."""

    def __init__(self, dim: int, max_position_embeddings: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        positions = torch.arange(max_position_embeddings, dtype=torch.float32)
        angles = torch.outer(positions, inv_freq)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos_cached, self.sin_cached


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k ([batch, seq, heads, head_dim]) by position, in the dtype of the tables (float32).

    With halves (a, b) of the last dimension this is the usual `x * cos + rotate_half(x) * sin`, where
    rotate_half(a, b) = (-b, a), written half by half: (a cos - b sin, b cos + a sin). The arithmetic is the
    same bit for bit, but no rotated copy is concatenated, which made a compiled bf16 CPU segment about 5% slower.
    """
    dtype = q.dtype
    half = q.shape[-1] // 2
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    cos_a, cos_b, sin_a, sin_b = cos[..., :half], cos[..., half:], sin[..., :half], sin[..., half:]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x = x.to(cos.dtype)
        a, b = x[..., :half], x[..., half:]
        return torch.cat((a * cos_a - b * sin_a, b * cos_b + a * sin_b), dim=-1).to(dtype)

    return rotate(q), rotate(k)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMSNorm computed in float32, returned in the input dtype."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(dtype)


def swiglu_intermediate_size(hidden_size: int, expansion: float, multiple: int = 256) -> int:
    """round(expansion * hidden * 2/3), rounded up to a multiple of 256 (keeps the FLOPs of a 4x MLP)."""
    size = round(expansion * hidden_size * 2 / 3)
    return -(size // -multiple) * multiple


class SwiGLU(nn.Module):
    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = swiglu_intermediate_size(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection; non-causal unless asked."""

    def __init__(self, hidden_size: int, num_heads: int, backend: AttentionBackend = "auto", causal: bool = False):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.backend = backend
        self.causal = causal
        self.qkv_proj = CastedLinear(hidden_size, 3 * hidden_size, bias=False)
        self.o_proj = CastedLinear(hidden_size, hidden_size, bias=False)

    def forward(
        self, hidden_states: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, seq, 3 * self.num_heads, self.head_dim)
        q, k, v = qkv.split(self.num_heads, dim=2)
        if cos_sin is not None:
            cos, sin = cos_sin
            q, k = apply_rotary_pos_emb(q, k, cos[:seq], sin[:seq])
        out = attention(q, k, v, backend=self.backend, causal=self.causal)
        return self.o_proj(out.reshape(batch, seq, self.hidden_size))


class PostNormBlock(nn.Module):
    """h = rmsnorm(h + attn(h)); h = rmsnorm(h + swiglu(h))."""

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        expansion: float,
        rms_norm_eps: float,
        attn_backend: AttentionBackend = "auto",
        causal: bool = False,
    ):
        super().__init__()
        self.self_attn = Attention(hidden_size, num_heads, backend=attn_backend, causal=causal)
        self.mlp = SwiGLU(hidden_size, expansion)
        self.norm_eps = rms_norm_eps

    def forward(
        self, hidden_states: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> torch.Tensor:
        hidden_states = rms_norm(hidden_states + self.self_attn(hidden_states, cos_sin=cos_sin), self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)


class ReasoningModule(nn.Module):
    """A stack of blocks applied after adding the input injection: module(h, x) = blocks(h + x)."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(
        self,
        hidden_states: torch.Tensor,
        input_injection: torch.Tensor,
        cos_sin: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        hidden_states = hidden_states + input_injection
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos_sin=cos_sin)
        return hidden_states
